"""Per-request routing policies: the predictive router and every baseline, behind one interface."""
