"""payments: card charges and payouts through an external payment provider."""
