"""Kiln as a service: one FastAPI app with two front doors on the same jobs.

``POST /`` speaks SageMaker's JSON 1.1 protocol (``X-Amz-Target: SageMaker.*``, SigV4), so
boto3's ``sagemaker`` client works unchanged; ``/v1/compilation-jobs`` is the REST API
(bearer tokens, OpenAPI). Never imports tvm: compiles run in subprocesses (``kiln.jobs``).
"""

from kiln.service.settings import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings):
    from kiln.service.app import create_app as _create

    return _create(settings)
