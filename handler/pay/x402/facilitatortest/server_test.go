package facilitatortest

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStartRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	_, err := Start(WithAddr("0.0.0.0:0"))
	require.ErrorContains(t, err, "not a loopback address")
}

// TestSpecFieldNames posts a request written by hand from the
// specification's field tables, not from package x402's types.
func TestSpecFieldNames(t *testing.T) {
	t.Parallel()
	now := time.Unix(1740672100, 0)
	srv, err := Start(WithClock(func() time.Time { return now }))
	require.NoError(t, err)
	defer srv.Close()
	payer := srv.Payer("carol")
	a := authorization{From: payer.Address, To: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", Value: "10000",
		ValidAfter: "1740672089", ValidBefore: "1740672154", Nonce: "0x01"}
	sig, err := signature(payer.key, "eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", a)
	require.NoError(t, err)
	reqs := `{"scheme":"exact","network":"eip155:84532","amount":"10000","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",` +
		`"payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}}`
	body := `{"x402Version":2,"paymentPayload":{"x402Version":2,"accepted":` + reqs + `,"payload":{"signature":"` + sig +
		`","authorization":{"from":"` + a.From + `","to":"` + a.To + `","value":"10000","validAfter":"1740672089",` +
		`"validBefore":"1740672154","nonce":"0x01"}}},"paymentRequirements":` + reqs + `}`
	resp, err := http.Post(srv.URL()+"/settle", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	answer, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(answer), `"success":true`)
	require.Equal(t, Calls{Settle: 1, Settled: 1}, srv.Calls("1"), "the nonce counts in any form")

	resp2, err := http.Post(srv.URL()+"/verify", "application/json", strings.NewReader(`{"paymentPayload":`))
	require.NoError(t, err)
	defer resp2.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp2.StatusCode)
}
