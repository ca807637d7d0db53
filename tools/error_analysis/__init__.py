"""Performance and error analysis of latency forecasts against the outcomes that arrived later.

Three questions, answered from arrays (one row per prediction joined to its outcome):

1. *How accurate is each model?* MAE, RMSE, R² and MAPE per model version, per backend and per
   time window (`segment_metrics`), grouped in numpy (``np.unique`` codes + ``np.bincount``), so a
   day of outcomes is scored in milliseconds.
2. *What do the errors look like?* Percentiles, skew, excess kurtosis and a normality test chosen
   for the sample size (`error_distribution`).
3. *Is a model systematically wrong somewhere?* A one-sample t-test of the error against 0 in each
   segment (backend, load band, hour of day), with Benjamini-Hochberg correction across every
   segment tested together (`segment_bias`).

Conventions:

* ``error = predicted - actual`` (ms). Positive means the model over-predicts (too pessimistic),
  negative means it under-predicts (too optimistic, the dangerous side for an SLA).
* MAPE excludes rows whose ``|actual|`` is below ``mape_floor_ms`` (default 1 ms) and reports how
  many it excluded: a 0 ms actual would make the ratio infinite, and clamping the denominator
  instead would let a handful of near-idle rows dominate the mean. MAPE is ``None`` when every row
  is excluded.
* R² follows scikit-learn for a constant actual: 1.0 for a perfect fit, else 0.0.
* Minimum sample sizes are enforced, never silently: a group below its floor is listed under
  ``skipped`` with its count and the reason, and is neither scored nor tested.

Modules: `rows` (checked inputs, encoded labels), `accuracy` (question 1), `distribution`
(question 2), `bias` (question 3), `report` (`analyze_errors`: all three, with a summary).
Pure: no I/O, deterministic.
"""
