"""risk: assesses every internal transfer and payout before money moves."""
