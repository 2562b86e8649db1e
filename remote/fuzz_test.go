package remote

import (
	"testing"
)

// FuzzDecodeFrame feeds arbitrary bytes to the frame decoder and the
// message decoders behind it: none may panic, and a frame that decodes
// must re-encode to the same bytes.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(appendFrame(nil, tRead, 7, 1, appendRead(nil, readReq{region: 1, off: 4096, n: 4096})))
	f.Add(appendFrame(nil, tWrite, 7, 2, appendWrite(nil, 0, []run{{off: 64, data: make([]byte, 64)}})))
	f.Add(appendFrame(nil, tResolve, 0, 3, appendResolve(nil, resolveReq{claim: true, name: "pool"})))
	f.Add(appendFrame(nil, tRegion, 7, 3, appendRegion(nil, regionInfo{id: 1, size: 8192})))
	f.Add(appendFrame(nil, tError, 7, 4, appendError(nil, codeBusy, "busy")))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := decodeFrame(b)
		if err != nil {
			return
		}
		if again := appendFrame(nil, fr.t, fr.epoch, fr.id, fr.payload); string(again) != string(b[:n]) {
			t.Fatalf("frame does not re-encode to its bytes")
		}
		switch fr.t {
		case tRead:
			_, _ = decodeRead(fr.payload)
		case tWrite:
			_, runs, err := decodeWrite(fr.payload, func(uint32) (uint64, bool) { return 1 << 20, true })
			if err == nil {
				for _, r := range runs {
					if r.off+uint64(len(r.data)) > 1<<20 {
						t.Fatalf("run [%d, +%d) outside the region", r.off, len(r.data))
					}
				}
			}
		case tResolve:
			_, _ = decodeResolve(fr.payload)
		case tCreate:
			_, _ = decodeCreate(fr.payload)
		case tRegion:
			_, _ = decodeRegion(fr.payload)
		case tError:
			_, _, _ = decodeError(fr.payload)
		}
	})
}
