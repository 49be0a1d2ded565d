"""Redis state of the A/B aggregator: every event is applied by ONE Lua script, atomically.

Idempotency, two layers, both inside the script (so a crash can never half-apply an event):

1. Offset watermark per `topic:partition` (`{ns}:offsets`): a message at or below the last
   applied offset is a redelivery (the consumer crashed after the Redis write, before the
   Kafka commit) and changes nothing. Partitions are consumed in order by one consumer at a
   time, so this makes processing exactly-once from Redis' point of view.
2. Event-id dedupe (`{ns}:seen:<event_id>`, set with a TTL when an event is accepted): the same
   event published twice (at two offsets) is counted once; the second is rejected as
   `duplicate_event`. A refused event leaves no marker, so a click consumed before its impression
   is counted when it is retried or replayed from the DLQ (click ids are deterministic).

Key layout (`ns` = namespace; a fresh namespace is a fresh aggregator):

    {ns}:offsets                      hash  topic:partition -> last applied offset
    {ns}:seen:<event_id>              str   dedupe marker (TTL dedupe_ttl_s)
    {ns}:req:<request_id>             hash  u=user t=epoch ms d=day a=assignments(JSON)
                                            i:<listing>=position, c:<listing>=1 once clicked (TTL)
    {ns}:experiments                  set   experiment ids seen
    {ns}:variants:<exp>, {ns}:days:<exp>  sets
    {ns}:m:<exp>:<variant>:<scope>    hash  requests impressions clicks users clickers
                                            sum_n2 sum_c2 sum_nc (user-level moments)
    {ns}:ui:..., {ns}:uc:...          hash  user -> impressions / clicks (in that scope); the day-scope
                                            ones expire request_ttl_s + 1 day after their last write
                                            (reports read only the m: hashes; these only feed the
                                            incremental moments while that day can still get clicks)
    {ns}:item:<listing>               hash  impressions clicks (all traffic)
    {ns}:items:dirty                  set   listings whose CTR changed since the last Feast push
    {ns}:accepted, {ns}:rejected      hash  outcome/reason -> count
    {ns}:rejlog:<topic:partition>     zset  "offset:reason" scored by offset, the last rejlog_cap
                                            refusals of that partition (re-sent to the DLQ if the
                                            message is redelivered: at most one uncommitted batch)

`scope` is the impression's UTC day (`YYYY-MM-DD`) or `all`. A click is attributed to the day
of its impression, so a day's CTR is the CTR of that day's impressions. `sum_*` are the sums
over users of n_i^2, c_i^2, n_i*c_i (n = item impressions, c = clicks) that the delta method
needs; they are maintained incrementally from each user's previous values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC

import redis

from services.common.events import Click, EventBase, Impression
from services.common.settings import RedisConfig

_LUA = r"""
local ns, op, tp, off = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local rl = ns..':rejlog:'..tp
local wm = redis.call('HGET', ns..':offsets', tp)
if wm and tonumber(wm) >= tonumber(off) then
  local hit = redis.call('ZRANGEBYSCORE', rl, off, off)[1]
  local reason = hit and string.match(hit, '^%d+:(.*)$')
  return {'redelivered', reason or redis.call('HGET', ns..':rejlog', tp..':'..off) or ''}  -- legacy hash
end
redis.call('HSET', ns..':offsets', tp, off)
local function reject(reason)
  redis.call('HINCRBY', ns..':rejected', reason, 1)
  redis.call('ZADD', rl, off, off..':'..reason)
  redis.call('ZREMRANGEBYRANK', rl, 0, -(tonumber(ARGV[5]) + 1))
  return {'rejected', reason}
end
if op == 'reject' then return reject(ARGV[6]) end
-- the dedupe marker is checked here but only written once the event is accepted: a refused
-- click (its impression not consumed yet) keeps its deterministic id free for a retry or replay
local seen = ns..':seen:'..ARGV[6]
if redis.call('EXISTS', seen) == 1 then return reject('duplicate_event') end
local function accept(kind)
  redis.call('SET', seen, '1', 'EX', tonumber(ARGV[7]))
  redis.call('HINCRBY', ns..':accepted', kind, 1)
  return {'ok', ''}
end
local rid, user, ts, day_ttl = ARGV[8], ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local rk = ns..':req:'..rid
local function scopes(exp, var, day)
  local out = {}
  for _, scope in ipairs({day, 'all'}) do
    local sfx = exp..':'..var..':'..scope
    table.insert(out, {ns..':m:'..sfx, ns..':ui:'..sfx, ns..':uc:'..sfx, scope ~= 'all'})
  end
  return out
end
-- per-user state of a day scope is only read while that day's requests can still get clicks
local function touch(k)
  if k[4] then
    redis.call('EXPIRE', k[2], day_ttl)
    redis.call('EXPIRE', k[3], day_ttl)
  end
end

if op == 'impression' then
  if redis.call('EXISTS', rk) == 1 then return reject('duplicate_request') end
  local day, assigns_json, req_ttl, n = ARGV[12], ARGV[13], tonumber(ARGV[14]), tonumber(ARGV[15])
  local fields = {'u', user, 't', ARGV[10], 'd', day, 'a', assigns_json}
  for i = 0, n - 1 do
    local lid, pos = ARGV[16 + 2 * i], ARGV[17 + 2 * i]
    table.insert(fields, 'i:'..lid); table.insert(fields, pos)
    redis.call('HINCRBY', ns..':item:'..lid, 'impressions', 1)
    redis.call('SADD', ns..':items:dirty', lid)
  end
  redis.call('HSET', rk, unpack(fields))
  redis.call('EXPIRE', rk, req_ttl)
  for _, a in ipairs(cjson.decode(assigns_json)) do
    local exp, var = a[1], a[2]
    redis.call('SADD', ns..':experiments', exp)
    redis.call('SADD', ns..':variants:'..exp, var)
    redis.call('SADD', ns..':days:'..exp, day)
    for _, k in ipairs(scopes(exp, var, day)) do
      local newn = redis.call('HINCRBY', k[2], user, n)
      local oldn = newn - n
      if oldn == 0 and n > 0 then redis.call('HINCRBY', k[1], 'users', 1) end
      local c = tonumber(redis.call('HGET', k[3], user) or '0')
      redis.call('HINCRBY', k[1], 'requests', 1)
      redis.call('HINCRBY', k[1], 'impressions', n)
      redis.call('HINCRBY', k[1], 'sum_n2', newn * newn - oldn * oldn)
      redis.call('HINCRBY', k[1], 'sum_nc', n * c)
      touch(k)
    end
  end
  return accept('impression')
end

if op == 'click' then
  local lid, window, skew = ARGV[12], tonumber(ARGV[13]), tonumber(ARGV[14])
  local r = redis.call('HMGET', rk, 'u', 't', 'd', 'a')
  if not r[1] then return reject('unknown_request') end
  if r[1] ~= user then return reject('user_mismatch') end
  local dt = ts - tonumber(r[2])
  if dt > window then return reject('click_too_late') end
  if dt < -skew then return reject('click_before_impression') end
  if redis.call('HEXISTS', rk, 'i:'..lid) == 0 then return reject('listing_not_shown') end
  if redis.call('HSETNX', rk, 'c:'..lid, '1') == 0 then return reject('duplicate_click') end
  for _, a in ipairs(cjson.decode(r[4])) do
    for _, k in ipairs(scopes(a[1], a[2], r[3])) do
      local newc = redis.call('HINCRBY', k[3], user, 1)
      if newc == 1 then redis.call('HINCRBY', k[1], 'clickers', 1) end
      local nn = tonumber(redis.call('HGET', k[2], user) or '0')
      redis.call('HINCRBY', k[1], 'clicks', 1)
      redis.call('HINCRBY', k[1], 'sum_c2', 2 * newc - 1)
      redis.call('HINCRBY', k[1], 'sum_nc', nn)
      touch(k)
    end
  end
  redis.call('HINCRBY', ns..':item:'..lid, 'clicks', 1)
  redis.call('SADD', ns..':items:dirty', lid)
  return accept('click')
end
return reject('unknown_op')
"""

# Rejections that mean "bad input" go to the dead-letter topic; duplicates are only counted.
DEAD_LETTER_REASONS = frozenset({
    "malformed", "unexpected_type", "unknown_request", "user_mismatch", "click_too_late",
    "click_before_impression", "listing_not_shown", "duplicate_request"})
DAY_STATE_MARGIN_S = 24 * 3600  # day-scope per-user hashes outlive the request records by this much
MOMENT_FIELDS = ("requests", "impressions", "clicks", "users", "clickers", "sum_n2", "sum_c2", "sum_nc")


@dataclass(frozen=True)
class Outcome:
    status: str  # ok | rejected | redelivered
    reason: str = ""

    @property
    def dead_letter(self) -> bool:
        return bool(self.reason) and self.reason in DEAD_LETTER_REASONS


@dataclass(frozen=True)
class Position:
    """Where a message came from (the idempotency watermark's key)."""

    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> str:
        return f"{self.topic}:{self.partition}"


def connect(cfg: RedisConfig) -> redis.Redis:
    return redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db,
                       password=cfg.password.get_secret_value() if cfg.password else None,
                       decode_responses=True, socket_timeout=10, health_check_interval=30)


def day_of(event: EventBase) -> str:
    return event.occurred_at.astimezone(UTC).strftime("%Y-%m-%d")


def epoch_ms(event: EventBase) -> int:
    return int(event.occurred_at.timestamp() * 1000)


class AbState:
    def __init__(self, client: redis.Redis, namespace: str = "abm", *, request_ttl_s: int = 3 * 24 * 3600,
                 dedupe_ttl_s: int = 8 * 24 * 3600, click_window_s: float = 24 * 3600,
                 clock_skew_s: float = 300, rejlog_cap: int = 100_000) -> None:
        self.r = client
        self.ns = namespace
        self.request_ttl_s = request_ttl_s
        self.dedupe_ttl_s = dedupe_ttl_s
        self.day_state_ttl_s = request_ttl_s + DAY_STATE_MARGIN_S
        self.rejlog_cap = rejlog_cap  # per partition; > the records one poll can leave uncommitted
        self.click_window_ms = int(click_window_s * 1000)
        self.clock_skew_ms = int(clock_skew_s * 1000)
        self._script = client.register_script(_LUA)

    # ---- writes ------------------------------------------------------------------------

    def _args(self, pos: Position, event: EventBase | None, reason: str | None) -> list:
        head = [self.ns, "", pos.tp, pos.offset, self.rejlog_cap]
        if reason is not None or event is None:
            head[1] = "reject"
            return head + [reason or "malformed"]
        if isinstance(event, Impression):
            head[1] = "impression"
            assigns = json.dumps([[a.experiment_id, a.variant] for a in event.assignments])
            args = head + [event.event_id, self.dedupe_ttl_s, event.request_id, event.user_id, epoch_ms(event),
                           self.day_state_ttl_s, day_of(event), assigns, self.request_ttl_s, len(event.items)]
            for item in event.items:
                args += [item.listing_id, item.position]
            return args
        if isinstance(event, Click):
            head[1] = "click"
            return head + [event.event_id, self.dedupe_ttl_s, event.request_id, event.user_id, epoch_ms(event),
                           self.day_state_ttl_s, event.listing_id, self.click_window_ms, self.clock_skew_ms]
        head[1] = "reject"
        return head + ["unexpected_type"]

    def apply(self, items: Sequence[tuple[Position, EventBase | None, str | None]]) -> list[Outcome]:
        """Apply (position, event, rejection reason or None) in order, one round trip.

        Each event is atomic on its own; the pipeline is not a transaction, so a crash in the
        middle leaves a prefix applied, which the offset watermark then skips on redelivery."""
        if not items:
            return []
        pipe = self.r.pipeline(transaction=False)
        for pos, event, reason in items:
            self._script(args=self._args(pos, event, reason), client=pipe)
        return [Outcome(str(s), str(r)) for s, r in pipe.execute()]

    # ---- reads -------------------------------------------------------------------------

    def experiments(self) -> list[str]:
        return sorted(self.r.smembers(f"{self.ns}:experiments"))

    def variants(self, exp: str) -> list[str]:
        return sorted(self.r.smembers(f"{self.ns}:variants:{exp}"))

    def days(self, exp: str) -> list[str]:
        return sorted(self.r.smembers(f"{self.ns}:days:{exp}"))

    def moments(self, exp: str, variants: Iterable[str],
                scopes: Iterable[str]) -> dict[tuple[str, str], dict[str, int]]:
        keys = [(v, s) for v in variants for s in scopes]
        pipe = self.r.pipeline(transaction=False)
        for v, s in keys:
            pipe.hgetall(f"{self.ns}:m:{exp}:{v}:{s}")
        out = {}
        for key, h in zip(keys, pipe.execute()):
            out[key] = {f: int(h.get(f, 0)) for f in MOMENT_FIELDS}
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        acc = self.r.hgetall(f"{self.ns}:accepted")
        rej = self.r.hgetall(f"{self.ns}:rejected")
        return {"accepted": {k: int(v) for k, v in sorted(acc.items())},
                "rejected": {k: int(v) for k, v in sorted(rej.items())}}

    def item(self, listing_id: str) -> dict[str, int]:
        h = self.r.hgetall(f"{self.ns}:item:{listing_id}")
        return {"impressions": int(h.get("impressions", 0)), "clicks": int(h.get("clicks", 0))}

    def items(self, listing_ids: Sequence[str]) -> list[dict[str, int]]:
        pipe = self.r.pipeline(transaction=False)
        for lid in listing_ids:
            pipe.hmget(f"{self.ns}:item:{lid}", "impressions", "clicks")
        return [{"impressions": int(i or 0), "clicks": int(c or 0)} for i, c in pipe.execute()]

    def pop_dirty_items(self, n: int) -> list[str]:
        return sorted(self.r.spop(f"{self.ns}:items:dirty", n) or [])

    def mark_dirty(self, listing_ids: Iterable[str]) -> None:
        ids = list(listing_ids)
        if ids:
            self.r.sadd(f"{self.ns}:items:dirty", *ids)

    def all_item_ids(self) -> list[str]:
        prefix = f"{self.ns}:item:"
        return sorted(k[len(prefix):] for k in self.r.scan_iter(match=f"{prefix}*", count=1000))

    def request(self, request_id: str) -> dict | None:
        h = self.r.hgetall(f"{self.ns}:req:{request_id}")
        return h or None

    def snapshot(self) -> dict:
        """Every number the reports are built from (for replay comparisons)."""
        out: dict = {"counters": self.counters(), "experiments": {}}
        for exp in self.experiments():
            variants, days = self.variants(exp), self.days(exp)
            m = self.moments(exp, variants, [*days, "all"])
            out["experiments"][exp] = {f"{v}/{s}": m[(v, s)] for v, s in sorted(m)}
        return out
