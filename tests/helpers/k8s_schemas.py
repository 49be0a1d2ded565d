"""Offline schema checks for Kubernetes objects: KServe CRDs from ../shared/k8s-schemas.

The conversion is the deploy step's own (pipelines.kfp.k8s_schema), so tests hold the chart
and the manifests to the same strict check the pipeline applies before it deploys.
"""

from __future__ import annotations

import os

from pipelines.kfp import k8s_schema


def crd_schema(filename: str = k8s_schema.ISVC_CRD, version: str = "v1beta1") -> dict:
    path = k8s_schema.find_crd(filename, os.environ.get("ADREC_K8S_SCHEMAS"))
    return k8s_schema.crd_schema(str(path), version)
