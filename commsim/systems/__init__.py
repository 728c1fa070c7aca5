"""The studies commsim reproduces, built on the kernel, network, collectives and workloads.

:data:`STUDIES` lists them explicitly (name -> ``module:Class``); scenarios run
them with ``workload: {kind: study, study: NAME, params: {...}}``. Importing this
package imports no study.
"""

from commsim.systems._study import STUDIES, Study, StudyContext, StudyOutput, get_study, study_names

__all__ = ["STUDIES", "Study", "StudyContext", "StudyOutput", "get_study", "study_names"]
