package zcodec

import "fmt"

func newLZ4HCEncoder(level int) (Encoder, error) {
	return nil, fmt.Errorf("%w: lz4hc (level %d) is not implemented yet", ErrUnsupported, level)
}
