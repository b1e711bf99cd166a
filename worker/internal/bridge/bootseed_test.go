//go:build !js

package bridge

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBootSeedModule runs worker/js/shim/bootseed.mjs under Node: its sha256
// against crypto/sha256 (every padding edge), the seed stream against
// SHA-256(seed || counter) blocks, and parseBootSeed's answers.
func TestBootSeedModule(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("needs Node (make test runs it)")
	}
	_, file, _, _ := runtime.Caller(0)
	module := filepath.Join(filepath.Dir(file), "..", "..", "js", "shim", "bootseed.mjs")
	lengths := []int{0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 1000}
	script := `
const m = await import(process.argv[1]);
const lengths = JSON.parse(process.argv[2]);
const hex = (b) => Buffer.from(b).toString("hex");
const digests = lengths.map((n) => hex(m.sha256(Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 255))));
const seed = m.parseBootSeed(" " + "ab".repeat(40) + "\n");
const out = new Uint8Array(100);
const fill = m.seedStream(seed);
fill(out.subarray(0, 5));
fill(out.subarray(5, 5));
fill(out.subarray(5));
const parse = (s) => { try { return hex(m.parseBootSeed(s)); } catch (e) { return "error: " + e.message; } };
console.log(JSON.stringify({ digests, seed: hex(seed), stream: hex(out), min: m.BOOT_SEED_MIN_BYTES,
  parsed: ["0123456789ABCDEFabcdef" + "00".repeat(21), "ab".repeat(31), "abc".repeat(23), "zz".repeat(32), "", 42, undefined].map(parse) }));
`
	want, _ := json.Marshal(lengths)
	out, err := exec.Command("node", "--input-type=module", "-e", script, module, string(want)).CombinedOutput()
	require.NoError(t, err, string(out))
	var got struct {
		Digests []string
		Seed    string
		Stream  string
		Min     int
		Parsed  []string
	}
	require.NoError(t, json.Unmarshal(out, &got), string(out))

	for i, n := range lengths {
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(j*7 + n)
		}
		sum := sha256.Sum256(data)
		require.Equal(t, hex.EncodeToString(sum[:]), got.Digests[i], "sha256 of %d bytes", n)
	}

	seed, _ := hex.DecodeString(strings.Repeat("ab", 40))
	require.Equal(t, hex.EncodeToString(seed), got.Seed, "the seed is the hex, trimmed")
	var stream []byte
	for c := uint32(0); len(stream) < 100; c++ {
		sum := sha256.Sum256(binary.BigEndian.AppendUint32(append([]byte{}, seed...), c))
		stream = append(stream, sum[:]...)
	}
	require.Equal(t, hex.EncodeToString(stream[:100]), got.Stream, "the stream continues across fills")

	require.Equal(t, 32, got.Min)
	require.Equal(t, []string{
		"0123456789abcdefabcdef" + strings.Repeat("00", 21),
		"error: TOOLGATE_BOOT_SEED has 31 bytes; it needs at least 32 (openssl rand -hex 32)",
		"error: TOOLGATE_BOOT_SEED is not an even number of hex digits",
		"error: TOOLGATE_BOOT_SEED is not an even number of hex digits",
		"error: TOOLGATE_BOOT_SEED is not an even number of hex digits",
		"error: TOOLGATE_BOOT_SEED is not an even number of hex digits",
		"error: TOOLGATE_BOOT_SEED is not an even number of hex digits",
	}, got.Parsed)
}
