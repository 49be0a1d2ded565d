"""Kubeflow Pipelines (KFP v2) for the visual embedder: prepare -> train -> gate -> export -> register -> deploy, backfill.

- ``ops``: the step logic (plain Python, unit-testable; the components only call it);
- ``components``: the ``@dsl.component`` bodies (run in the project image / in-process locally);
- ``pipeline``: the pipeline graph, GPU or CPU variant, and compilation;
- ``deploy``: KServe InferenceService render + create/patch, wait for Ready, rollback;
- ``k8s_schema``: CRD openAPIV3Schema -> JSON Schema (strict) validation;
- ``cli``: ``compile``, ``submit`` (kfp.Client), ``local`` (kfp.local.SubprocessRunner).
"""
