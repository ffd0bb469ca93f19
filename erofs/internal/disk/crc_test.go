package disk

import "hash/crc32"

func crc32cRaw(b []byte) uint32 {
	return crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), b)
}
