//go:build !js

package stripe_test

import (
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/toolgate/toolgate-go/handler/pay/stripe"
)

const (
	secret    = "whsec_test_0123456789abcdefghijklmnopqrstuv"
	oldSecret = "whsec_test_old_zyxwvutsrqponmlkjihgfedcba"
)

// now is the clock of every verification: a fixed instant, never time.Now.
var now = time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC)

var body = []byte(`{"id":"evt_1","object":"event","type":"checkout.session.completed","created":1764572400}`)

// signed returns the Stripe-Signature header that stripe-go writes for
// payload under secret at ts, with the scheme given ("" is v1).
func signed(t *testing.T, payload []byte, secret string, ts time.Time, scheme string) string {
	t.Helper()
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
		Payload: payload, Secret: secret, Timestamp: ts, Scheme: scheme,
	}).Header
}

func TestVerify(t *testing.T) {
	t.Parallel()
	good := signed(t, body, secret, now, "")
	goodSig := strings.TrimPrefix(good[strings.Index(good, ",v1=")+1:], "v1=")
	otherSig := hex.EncodeToString(stripe.Sign("whsec_someone_else", now.Unix(), body))
	tampered := append([]byte(nil), body...)
	tampered[len(tampered)-2] = '1'

	tests := map[string]struct {
		header  string
		body    []byte
		secrets []string
		want    error
	}{
		"valid":                         {header: good, body: body, secrets: []string{secret}},
		"valid at the tolerance's past": {header: signed(t, body, secret, now.Add(-300*time.Second), ""), body: body, secrets: []string{secret}},
		"valid at the tolerance's future": {
			header: signed(t, body, secret, now.Add(300*time.Second), ""), body: body, secrets: []string{secret}},
		"tampered body":    {header: good, body: tampered, secrets: []string{secret}, want: stripe.ErrNoMatchingSignature},
		"wrong secret":     {header: good, body: body, secrets: []string{"whsec_wrong"}, want: stripe.ErrNoMatchingSignature},
		"old timestamp":    {header: signed(t, body, secret, now.Add(-301*time.Second), ""), body: body, secrets: []string{secret}, want: stripe.ErrTimestampOutsideTolerance},
		"future timestamp": {header: signed(t, body, secret, now.Add(301*time.Second), ""), body: body, secrets: []string{secret}, want: stripe.ErrTimestampOutsideTolerance},
		"old timestamp and tampered body": {
			header: signed(t, body, secret, now.Add(-time.Hour), ""), body: tampered, secrets: []string{secret}, want: stripe.ErrNoMatchingSignature},
		"missing header":   {header: "", body: body, secrets: []string{secret}, want: stripe.ErrMissingHeader},
		"malformed header": {header: "garbage", body: body, secrets: []string{secret}, want: stripe.ErrMalformedHeader},
		"two v1, the right one second": {
			header: "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1=" + otherSig + ",v1=" + goodSig, body: body, secrets: []string{secret}},
		"rotation: signed with the old secret": {
			header: signed(t, body, oldSecret, now, ""), body: body, secrets: []string{secret, oldSecret}},
		"rotation: signed with the new secret": {
			header: signed(t, body, secret, now, ""), body: body, secrets: []string{oldSecret, secret}},
		"rotation: Stripe signs with both": {
			header: signed(t, body, oldSecret, now, "") + ",v1=" + goodSig, body: body, secrets: []string{secret}},
		"v0 only":   {header: signed(t, body, secret, now, "v0"), body: body, secrets: []string{secret}, want: stripe.ErrNoMatchingSignature},
		"v0 and v1": {header: signed(t, body, secret, now, "v0") + ",v1=" + goodSig, body: body, secrets: []string{secret}},
		"an empty secret matches nothing": {
			header: signed(t, body, "", now, ""), body: body, secrets: []string{"", secret}, want: stripe.ErrNoMatchingSignature},
		"no secret": {header: good, body: body, secrets: []string{""}, want: stripe.ErrNoSecret},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := stripe.Verify(tc.header, tc.body, tc.secrets, now, 0)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestVerifyTolerance(t *testing.T) {
	t.Parallel()
	h := signed(t, body, secret, now.Add(-10*time.Minute), "")
	require.ErrorIs(t, stripe.Verify(h, body, []string{secret}, now, 0), stripe.ErrTimestampOutsideTolerance)
	require.NoError(t, stripe.Verify(h, body, []string{secret}, now, 10*time.Minute))
	require.ErrorIs(t, stripe.Verify(h, body, []string{secret}, now, 10*time.Minute-time.Second), stripe.ErrTimestampOutsideTolerance)
}

func TestSignMatchesStripe(t *testing.T) {
	t.Parallel()
	want := webhook.ComputeSignature(now, body, secret)
	require.Equal(t, want, stripe.Sign(secret, now.Unix(), body))
}

func TestParseHeader(t *testing.T) {
	t.Parallel()
	sig := strings.Repeat("ab", 32)
	many := "t=1" + strings.Repeat(",v1="+sig, stripe.MaxSignatures)

	h, err := stripe.ParseHeader("t=1764572400,v1=" + sig + ",v0=zz,scheme=x")
	require.NoError(t, err)
	require.Equal(t, int64(1764572400), h.Timestamp)
	require.Len(t, h.V1, 1)
	require.Equal(t, "t=1764572400,v1="+sig, h.String())

	h, err = stripe.ParseHeader(many)
	require.NoError(t, err)
	require.Len(t, h.V1, stripe.MaxSignatures)

	h, err = stripe.ParseHeader("t=1764572400")
	require.NoError(t, err, "no v1 is well formed; it simply matches nothing")
	require.Empty(t, h.V1)

	refused := map[string]string{
		"too many v1":          many + ",v1=" + sig,
		"too long":             "t=1," + strings.Repeat("x", stripe.MaxHeaderBytes),
		"no timestamp":         "v1=" + sig,
		"two timestamps":       "t=1,t=2,v1=" + sig,
		"empty timestamp":      "t=,v1=" + sig,
		"signed timestamp":     "t=+1,v1=" + sig,
		"negative timestamp":   "t=-1,v1=" + sig,
		"zero timestamp":       "t=0,v1=" + sig,
		"leading zero":         "t=01,v1=" + sig,
		"timestamp overflows":  "t=99999999999999999999,v1=" + sig,
		"timestamp not digits": "t=12a,v1=" + sig,
		"short v1":             "t=1,v1=abcd",
		"v1 not hex":           "t=1,v1=" + strings.Repeat("zz", 32),
		"item without =":       "t=1,v1",
		"empty item":           "t=1,,v1=" + sig,
		"empty key":            "t=1,=x",
	}
	for name, header := range refused {
		_, err := stripe.ParseHeader(header)
		require.ErrorIs(t, err, stripe.ErrMalformedHeader, name)
	}
	_, err = stripe.ParseHeader("")
	require.ErrorIs(t, err, stripe.ErrMissingHeader)
}

// FuzzParseHeader checks that the parser never panics, that whatever it
// accepts respects the bounds, and that an accepted header round-trips:
// its t= item spells the parsed timestamp, and String parses back to the
// same header.
func FuzzParseHeader(f *testing.F) {
	sig := strings.Repeat("0f", 32)
	for _, seed := range []string{
		"", "t=1764572400,v1=" + sig, "t=1,v0=" + sig, "t=1,v1=" + sig + ",v1=" + sig,
		"t=01", "t=-5", "v1=", ",,,", "t=1, v1=" + sig, "t=9223372036854775807",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		h, err := stripe.ParseHeader(header)
		if err != nil {
			return
		}
		require.LessOrEqual(t, len(header), stripe.MaxHeaderBytes)
		require.LessOrEqual(t, len(h.V1), stripe.MaxSignatures)
		require.Positive(t, h.Timestamp)
		require.Contains(t, strings.Split(header, ","), "t="+strconv.FormatInt(h.Timestamp, 10))
		again, err := stripe.ParseHeader(h.String())
		require.NoError(t, err)
		require.Equal(t, h, again)
	})
}
