"""The report page of a run folder: ``report.html`` (self-contained: inline CSS, JS and data) and its image files.

``sources`` reads a finished or interrupted ``evaluate`` / ``explain-dataset`` folder, ``images`` draws each image's
photo and overlays on the original photo as small JPEGs, ``builder`` writes the page.
"""

from camrt.runtime.report_page.builder import PAGE, build_report
from camrt.runtime.report_page.images import FOLDER, report_facts, write_image_files

__all__ = ["FOLDER", "PAGE", "build_report", "report_facts", "write_image_files"]
