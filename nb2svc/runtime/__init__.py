"""The service runtime, copied into every service directory as ``nb2svc_runtime``.

It imports only the standard library and what the service's lock installs
(starlette, uvicorn, cloudpickle, fastjsonschema, prometheus-client, orjson), never nb2svc: the directory
runs where nb2svc is not installed. The ASGI app is ``nb2svc_runtime.app.create_app``.
"""
