module github.com/erofsd/erofsd

go 1.26.8

require (
	github.com/klauspost/compress v1.20.4
	golang.org/x/sys v0.50.0
)

require github.com/erofs/go-erofs v0.3.1

require github.com/sirupsen/logrus v1.10.2
