"""The A/B metrics service's one settings object (env: ADREC_*, nested with __).

e.g. `ADREC_ABMETRICS__GROUP_ID=adrec-abmetrics`, `ADREC_REDIS__HOST=redis`,
`ADREC_ABMETRICS__EXPERIMENTS_FILE=/etc/adrec/experiments.yaml` (the recommender's ConfigMap).
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from services.common.events import Topics
from services.common.feature_store import FeatureStoreConfig
from services.common.settings import KafkaConfig, RedisConfig, ServiceSettings


class AbMetricsConfig(BaseModel):
    topic: str = Topics.USER_EVENTS
    group_id: str = "adrec-abmetrics"
    namespace: str = Field(default="abm", pattern=r"^[A-Za-z0-9_.:\-]{1,64}$",
                           description="prefix of every Redis key; a fresh one = a fresh aggregator")
    experiments_file: str | None = Field(default=None, description="the experiments YAML (variant weights, SRM)")
    poll_max_records: int = Field(default=500, ge=1, le=10_000)
    poll_timeout_s: float = Field(default=0.5, gt=0)
    click_window_s: float = Field(default=24 * 3600, gt=0,
                                  description="a click later than this after its impression is rejected")
    clock_skew_s: float = Field(default=300, ge=0,
                                description="a click may precede its impression by this much (producer clocks)")
    request_ttl_s: int = Field(default=3 * 24 * 3600, ge=60, description="how long impression records stay in Redis")
    dedupe_ttl_s: int = Field(default=8 * 24 * 3600, ge=60, description="event-id dedupe horizon (> topic retention)")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="confidence intervals and tests")
    srm_alpha: float = Field(default=0.001, gt=0, lt=1)
    msprt_tau_rel: float = Field(default=0.1, gt=0,
                                 description="mSPRT mixture scale: sd of plausible lifts, relative to control CTR")
    ctr_prior: float = Field(default=0.02, gt=0, lt=1, description="item CTR smoothing: prior mean")
    ctr_prior_strength: float = Field(default=100.0, ge=0,
                                      description="item CTR smoothing: prior weight in impressions")
    feast_push_interval_s: float = Field(default=60.0, gt=0)
    feast_push_batch: int = Field(default=1000, ge=1)
    feast_enabled: bool = True


class AbMetricsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADREC_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "abmetrics"
    port: int = Field(default=8010, ge=1, le=65535)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    feast: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    abmetrics: AbMetricsConfig = Field(default_factory=AbMetricsConfig)
