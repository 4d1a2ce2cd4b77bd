"""The service directory's own ``README.md``: what it is, how to run it, how to call each endpoint."""

from __future__ import annotations

import json

from nb2svc.runtime.manifest import EndpointDescription, Manifest
from nb2svc.targets.templates import fill, install_command


def files(manifest: Manifest) -> dict[str, str]:
    lock = manifest.lock
    lock_note = (
        f"locked with {lock.tool}, every package pinned and hashed"
        if lock.hashes
        else f"OFFLINE lock ({lock.tool}): pinned from the installed metadata, without hashes"
    )
    text = fill(
        "README.md",
        install=install_command(lock),
        lock_note=lock_note,
        name=manifest.name,
        nb2svc_version=manifest.nb2svc_version,
        notebook=manifest.notebook.file,
        notebook_sha256=manifest.notebook.sha256,
        built_at=manifest.built_at,
        python_version=manifest.python.version,
        python_minor=manifest.python.minor,
        download_hashes="--require-hashes " if lock.hashes else "",
        cloudpickle_version=manifest.cloudpickle_version,
        endpoints="".join(_endpoint_section(e) for e in manifest.endpoints),
    )
    return {"README.md": text}


def _endpoint_section(endpoint: EndpointDescription) -> str:
    examples = endpoint.examples
    body = json.dumps(examples[0].request).replace("'", "'\\''") if examples else '{"data": ...}'
    answer = f"    # {json.dumps(examples[0].response)}\n" if examples else ""
    return (
        f"### `{endpoint.name}{endpoint.signature}`\n\n"
        f"    curl -s -X POST localhost:8000{endpoint.route} -H 'Content-Type: application/json' -d '{body}'\n"
        f"{answer}\n"
    )
