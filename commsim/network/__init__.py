"""The network: topologies, generators, routing and transfers over links."""

from commsim._lazy import lazy_exports

# imported on first use: `import commsim` must not pay for what a run may never need
__getattr__, __dir__ = lazy_exports(__name__, {
    "GENERATORS": "commsim.network.generators",
    "build": "commsim.network.generators",
    "Network": "commsim.network.network",
    "RouteSet": "commsim.network.network",
    "TransferBatch": "commsim.network.network",
    "Router": "commsim.network.routing",
    "RoutingPolicy": "commsim.network.routing",
    "NODE_KINDS": "commsim.network.topology",
    "Topology": "commsim.network.topology",
})

__all__ = ["GENERATORS", "NODE_KINDS", "Network", "RouteSet", "Router", "RoutingPolicy", "Topology",
           "TransferBatch", "build"]
