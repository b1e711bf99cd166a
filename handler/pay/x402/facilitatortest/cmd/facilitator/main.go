// Command facilitator runs the x402 test facilitator (package
// facilitatortest) for local runs: point the gateway's FACILITATOR_URL at
// it. It listens on loopback only.
//
//	go run ./handler/pay/x402/facilitatortest/cmd/facilitator -addr 127.0.0.1:4021
//
// Payments must be signed with the test scheme (facilitatortest.PayerKey):
// HMAC-SHA256 keys derived from -secret, not real EIP-712 signatures. The
// -pay mode signs one for a test payer: give it a 402's PAYMENT-REQUIRED
// header value and it prints the PAYMENT-SIGNATURE header value that pays
// the first offer:
//
//	go run ./handler/pay/x402/facilitatortest/cmd/facilitator -pay "$REQUIRED" -payer alice
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/toolgate/toolgate-go/handler/pay/x402"

	"github.com/toolgate/toolgate-go/handler/pay/x402/facilitatortest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4021", "loopback `host:port` to listen on")
	secret := flag.String("secret", facilitatortest.DefaultSecret, "the `secret` payer keys derive from")
	networks := flag.String("networks", strings.Join(facilitatortest.DefaultNetworks, ","), "supported CAIP-2 `networks`, comma-separated")
	required := flag.String("pay", "", "sign a payment for this PAYMENT-REQUIRED header `value`, print it and exit")
	payer := flag.String("payer", "alice", "the test payer's `seed` for -pay")
	flag.Parse()
	if *required != "" {
		doc, err := x402.DecodePaymentRequired(*required)
		if err != nil {
			log.Fatal(err)
		}
		if len(doc.Accepts) == 0 {
			log.Fatal("the PAYMENT-REQUIRED document accepts nothing")
		}
		p := facilitatortest.NewPayer(*secret, *payer).Pay(doc.Accepts[0], time.Now())
		header, err := x402.Encode(p)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(header)
		return
	}

	srv, err := facilitatortest.Start(facilitatortest.WithAddr(*addr), facilitatortest.WithSecret(*secret),
		facilitatortest.WithNetworks(strings.Split(*networks, ",")...))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("x402 test facilitator on %s (POST /verify, POST /settle, GET /supported; networks %s)\n", srv.URL(), *networks)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	if err := srv.Close(); err != nil {
		log.Fatal(err)
	}
}
