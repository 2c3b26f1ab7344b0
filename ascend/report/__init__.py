"""The run report as a page: ``runs/<name>/report.html`` (self-contained, charts inline) and the
memory chart of a plan on its own (``ascend plan --chart``). The text/JSON run report stays in
``ascend.pipeline.report``."""

from ascend.report.charts import memory_svg, write_memory_png
from ascend.report.html import render_html, write_run_report

__all__ = ["memory_svg", "render_html", "write_memory_png", "write_run_report"]
