"""A/B metrics: the Kafka aggregator of impressions and clicks, statistics, report API and dashboard.

- `state.py`     Redis state: idempotent (offset watermark + event-id dedupe) counters per
                 experiment x variant x day, kept consistent by one Lua script per event.
- `aggregator.py` the Kafka consumer loop (user-events -> state, rejects -> dead letters).
- `stats.py`     delta-method CIs for ratio metrics, two-proportion test, mSPRT, SRM chi-square.
- `report.py`    the JSON report; `dashboard.py` the HTML page; `api.py` the FastAPI app.
- `feast_ctr.py` smoothed item CTR pushed to Feast (`item_ctr_push`) for the re-ranker.
"""
