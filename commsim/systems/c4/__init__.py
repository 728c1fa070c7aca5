"""C4: communication-driven fault detection and isolation (C4D) and traffic planning (C4P).

Modules, one concept each:

* :mod:`~commsim.systems.c4.params` -- the study's parameters and their defaults;
* :mod:`~commsim.systems.c4.model` -- the 22B job and its iteration time (replayed replica + fabric rings);
* :mod:`~commsim.systems.c4.layout` -- servers, job placement, the data-parallel rings;
* :mod:`~commsim.systems.c4.traffic` -- the jobs' all-reduces (ring or hierarchical) as shared collectives
  in flows mode, QP by QP, with per-QP timing and paths (ECMP or planned);
* :mod:`~commsim.systems.c4.planner` -- C4P's path planner as a router the network takes;
* :mod:`~commsim.systems.c4.c4p` -- ECMP versus planned versus re-planned after a link failure;
* :mod:`~commsim.systems.c4.episode` -- fault histories and faulty iterations simulated in detail
  (fabric faults as :mod:`commsim.faults` models);
* :mod:`~commsim.systems.c4.detector` -- C4D's classification and localisation;
* :mod:`~commsim.systems.c4.timeline` -- the event-driven long run and its downtime accounting;
* :mod:`~commsim.systems.c4.c4d` -- C4D versus timeout + manual diagnosis;
* :mod:`~commsim.systems.c4.figures`, :mod:`~commsim.systems.c4.validation`, :mod:`~commsim.systems.c4.study`.
"""

from commsim.systems.c4.params import C4DParams, C4Params, C4PParams
from commsim.systems.c4.study import C4Study

__all__ = ["C4Study", "C4Params", "C4DParams", "C4PParams"]
