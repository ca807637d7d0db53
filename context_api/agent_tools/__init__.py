"""The agents' tools, one module per concern; `context_api.api.ContextAPI` puts them together.

- `base`: tool declarations, "now", time windows and the fleet picture every tool reads;
- `fleet`: the fleet now and next (state, one backend, forecasts, capacity risk, recommendation);
- `usage`: backends over a window, compared, and what their traffic cost;
- `whatif`: what if a backend were drained or failed now (the request-level simulator);
- `decisions`: stored routing decisions and why they went where they did;
- `models`: forecaster versions, accuracy against outcomes, the retraining policy;
- `drift`: concept drift and change points, the drift monitor's record;
- `quality`: the SLA-violation timeline with its likely causes, anomalies;
- `learning`: the retrain requests and training a challenger for one;
- `experiments`: champion-vs-challenger experiments, and proposing the change a verdict calls for;
- `alerts`: recent alerts.
"""
