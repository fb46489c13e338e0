"""The study report: a static HTML folder (figures, image galleries, tables) that opens from disk.

>>> from tailscope.report import write_report
>>> index = write_report("runs/demo")          # or write_report(study)
"""

from tailscope.report.build import learner_label, write_report

__all__ = ["learner_label", "write_report"]
