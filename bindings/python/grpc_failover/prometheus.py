"""Clients' metrics in a ``prometheus_client`` registry (needs the optional dependency
``prometheus_client``)::

    from prometheus_client import REGISTRY, start_http_server
    from grpc_failover.prometheus import ClientCollector

    client = grpc_failover.Client("etcd:///service/user", etcd=[...])
    REGISTRY.register(ClientCollector(client))
    start_http_server(9100)

Each scrape reads every client's :meth:`~grpc_failover.Client.metrics` (gRFC A66 client metrics
and the library's ``grpc_failover_*`` ones) and merges the families of several clients, whose
series differ by their ``grpc_target`` label. Clients are held weakly: a client that is closed
or collected drops out.
"""

from __future__ import annotations

import weakref
from typing import Dict, Iterable, List

try:
    from prometheus_client.core import Metric
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:  # pragma: no cover - exercised only without the dependency
    raise ImportError(
        "grpc_failover.prometheus needs prometheus_client: pip install prometheus_client"
    ) from e

from ._client import Client


class ClientCollector:
    """A ``prometheus_client`` collector of the metrics of the clients given to it (or
    :meth:`add`-ed later). Thread-safe as far as ``prometheus_client`` needs: a scrape takes a
    snapshot of the client set."""

    def __init__(self, *clients: Client):
        self._clients: "weakref.WeakSet[Client]" = weakref.WeakSet(clients)

    def add(self, client: Client) -> None:
        """Adds a client to the ones this collector reads."""
        self._clients.add(client)

    def remove(self, client: Client) -> None:
        """Stops reading a client (a closed or collected client drops out by itself)."""
        self._clients.discard(client)

    def describe(self) -> List[Metric]:
        """Nothing up front: the families depend on the clients (and registering must not
        scrape them)."""
        return []

    def collect(self) -> Iterable[Metric]:
        """Every live client's metric families, merged by name."""
        merged: Dict[str, Metric] = {}
        for client in list(self._clients):
            if client.closed:
                continue
            try:
                text = client.metrics()
            except Exception:  # noqa: BLE001 - closed meanwhile: skip it this scrape
                continue
            for family in text_string_to_metric_families(text):
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
        return list(merged.values())
