package stripe

import "github.com/toolgate/toolgate-go/store"

// RailName names the Stripe rail in the store: it scopes event ids and
// payment ids.
const RailName = "stripe"

// TopupEvent translates a verified event into what it means for a top-up,
// or reports false for an event that means nothing to one (a type toolgate
// does not handle, or a completed session with nothing to pay).
//
//   - checkout.session.completed: paid when payment_status is "paid" (the
//     amount_total and currency are credited), processing when "unpaid" (a
//     delayed payment method: the credit waits for
//     async_payment_succeeded);
//   - checkout.session.async_payment_succeeded: paid;
//   - checkout.session.async_payment_failed: failed;
//   - checkout.session.expired: expired;
//   - charge.refunded: refunded, with the charge's running refunded total;
//   - charge.dispute.created: disputed, with the disputed amount.
//
// Session events name the caller and the top-up through the metadata
// toolgate set when it created the session (CheckoutSessionForm); a charge
// names them through its PaymentIntent's metadata when present, and both a
// charge and a dispute name the PaymentIntent, by which the engine finds
// the top-up otherwise.
func (ev Event) TopupEvent() (store.TopupEvent, bool) {
	out := store.TopupEvent{Rail: RailName, EventID: ev.ID, Type: ev.Type}
	switch {
	case ev.CheckoutSession != nil:
		s := ev.CheckoutSession
		out.Caller = s.Metadata["caller"]
		out.TopupID = s.Metadata["topup_id"]
		if out.TopupID == "" {
			out.TopupID = s.ClientReferenceID
		}
		out.SessionID = s.ID
		out.PaymentIntent = s.PaymentIntent
		out.Amount, out.Currency = s.AmountTotal, s.Currency
		switch ev.Type {
		case TypeCheckoutSessionCompleted:
			switch s.PaymentStatus {
			case PaymentStatusPaid:
				out.Kind = store.TopupEventPaid
			case "unpaid":
				out.Kind = store.TopupEventProcessing
			default: // no_payment_required: nothing was paid, nothing to credit
				return store.TopupEvent{}, false
			}
		case TypeCheckoutSessionAsyncPaymentSucceeded:
			out.Kind = store.TopupEventPaid
		case TypeCheckoutSessionAsyncPaymentFailed:
			out.Kind = store.TopupEventFailed
		case TypeCheckoutSessionExpired:
			out.Kind = store.TopupEventExpired
		default:
			return store.TopupEvent{}, false
		}
		if out.Kind == store.TopupEventPaid && out.Amount <= 0 {
			return store.TopupEvent{}, false
		}
		return out, true
	case ev.Charge != nil:
		c := ev.Charge
		out.Kind = store.TopupEventRefunded
		out.Caller, out.TopupID = c.Metadata["caller"], c.Metadata["topup_id"]
		out.PaymentIntent = c.PaymentIntent
		out.Amount, out.Currency, out.Source = c.AmountRefunded, c.Currency, c.ID
		return out, out.Amount > 0
	case ev.Dispute != nil:
		d := ev.Dispute
		out.Kind = store.TopupEventDisputed
		out.PaymentIntent = d.PaymentIntent
		out.Amount, out.Currency, out.Source = d.Amount, d.Currency, d.ID
		return out, out.Amount > 0
	}
	return store.TopupEvent{}, false
}
