package abi

// depthOf returns the nesting depth of one well-formed, definite-length CBOR
// item (the decoder has already checked well-formedness). Scalars have depth 0.
func depthOf(b []byte) int {
	d, _ := walk(b, 0)
	return d
}

// walk returns the depth of the item at b[i:] and the offset after it.
func walk(b []byte, i int) (depth, next int) {
	if i >= len(b) {
		return 0, len(b)
	}
	major, info := b[i]>>5, b[i]&0x1f
	i++
	var arg uint64
	switch {
	case info < 24:
		arg = uint64(info)
	case info <= 27:
		n := 1 << (info - 24)
		if i+n > len(b) {
			return 0, len(b)
		}
		for k := 0; k < n; k++ {
			arg = arg<<8 | uint64(b[i+k])
		}
		i += n
	default:
		return 0, len(b)
	}
	switch major {
	case 2, 3:
		if arg > uint64(len(b)-i) {
			return 0, len(b)
		}
		return 0, i + int(arg)
	case 4, 5:
		items := arg
		if major == 5 {
			items *= 2
		}
		maxd := 0
		for k := uint64(0); k < items && i < len(b); k++ {
			var d int
			d, i = walk(b, i)
			maxd = max(maxd, d)
		}
		return maxd + 1, i
	case 6:
		return walk(b, i)
	case 7:
		return 0, i
	default:
		return 0, i
	}
}
