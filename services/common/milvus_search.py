"""The search RPC without MilvusClient's per-call layers, for the store's hot path.

`MilvusClient.search` wraps one gRPC call in decorators (error handling, tracing, retry),
parameter checks, and a generic result parser; with a few searches in flight on worker threads
those layers cost more CPU than the RPC itself (measured: about 1.3 ms of process CPU per search
against 0.5 ms for the stub call). This module keeps pymilvus' own pieces, its request builder
(`Prepare.search_requests_with_expr`), consistency timestamps, call metadata and the connection's
gRPC stub (with its auth and db interceptors), and reads scalar output fields straight from
the response's columns. A response with anything but plain scalar columns (vectors, JSON,
arrays, dynamic or nullable fields) is handed to pymilvus' `SearchResult` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pymilvus import DataType, MilvusClient
from pymilvus.client.call_context import CallContext
from pymilvus.client.prepare import Prepare
from pymilvus.client.search_result import SearchResult
from pymilvus.client.ts_utils import construct_guarantee_ts
from pymilvus.client.utils import check_status

_COLUMN = {DataType.BOOL: "bool_data", DataType.INT8: "int_data", DataType.INT16: "int_data",
           DataType.INT32: "int_data", DataType.INT64: "long_data", DataType.FLOAT: "float_data",
           DataType.DOUBLE: "double_data", DataType.VARCHAR: "string_data"}

Row = tuple[str, float, dict[str, Any]]  # (primary key, score, output fields)


class DirectSearch:
    """`search(...)` returns, per query vector, its hits in score order, each `make(pk, score, fields)`. Raises
    `grpc.RpcError` (transport, deadline) or `MilvusException` (a server status), like pymilvus."""

    def __init__(self, client: MilvusClient, db_name: str = "", make: Callable[..., Any] = lambda *row: row) -> None:
        self._client = client
        self._db_name = db_name
        self._make = make  # built from (pk, score, fields) per hit
        if not hasattr(client._get_connection(), "_stub"):  # noqa: SLF001 - fail at start-up, not per request
            raise TypeError("this pymilvus has no gRPC stub on its connection handler")

    def search(self, collection: str, data: list[list[float]], limit: int, expr: str,
               output_fields: Sequence[str], search_params: dict, consistency_level: str,
               timeout: float | None) -> list[list[Row]]:
        handler = self._client._get_connection()  # noqa: SLF001 - the connection pymilvus manages (reconnects included)
        kwargs: dict[str, Any] = {"consistency_level": consistency_level}
        use_default = construct_guarantee_ts(collection, kwargs, handler.server_address, self._db_name)
        request = Prepare.search_requests_with_expr(
            collection_name=collection, anns_field="", param=search_params, limit=limit, data=data, ids=None,
            expr=expr, partition_names=None, output_fields=list(output_fields), round_decimal=-1, ranker=None,
            function_chains=None, highlighter=None, use_default_consistency=use_default, **kwargs)
        metadata = CallContext(db_name=self._db_name).to_grpc_metadata()
        response = handler._stub.Search(request, timeout=timeout, metadata=metadata)  # noqa: SLF001
        check_status(response.status)
        return split_results(response, self._make)


def split_results(response: Any, make: Callable[..., Any] = lambda *row: row) -> list[list[Row]]:
    res = response.results
    columns = _columns(res.fields_data)
    if columns is None:
        return [hybrid_rows(hits, make)
                for hits in SearchResult(res, -1, status=response.status, session_ts=response.session_ts)]
    ids = list(res.ids.str_id.data) or [str(i) for i in res.ids.int_id.data]
    scores = list(res.scores)
    names = list(columns)
    out: list[list[Row]] = []
    start = 0
    for n in res.topks:
        rows = [dict(zip(names, values)) for values in zip(*(columns[f][start:start + n] for f in names))] \
            if names else [{} for _ in range(n)]
        out.append([make(ids[start + i], scores[start + i], rows[i]) for i in range(n)])
        start += n
    return out


def hybrid_rows(hits: Any, make: Callable[..., Any] = lambda *row: row) -> list:
    """One query's results as pymilvus parses them (HybridHits, from milvus-lite and Milvus alike):
    ids and scores are columns and the scalar output fields a fresh dict per hit, read directly
    (`get_raw_item` does not materialise lazy vector fields, which these searches never ask for)."""
    return [make(str(pk), float(score), hits.get_raw_item(i).get("entity", {}))
            for i, (pk, score) in enumerate(zip(hits.ids, hits.distances))]


def _columns(fields_data: Any) -> dict[str, list] | None:
    """Each output field as a list, or None when one is not a plain non-null scalar column."""
    columns: dict[str, list] = {}
    for fd in fields_data:
        attr = _COLUMN.get(fd.type)
        if attr is None or fd.is_dynamic or (len(fd.valid_data) and not all(fd.valid_data)):
            return None
        columns[fd.field_name] = list(getattr(fd.scalars, attr).data)
    return columns
