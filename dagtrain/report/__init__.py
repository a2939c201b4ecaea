"""Pictures of finished runs: the EEG-style task timeline."""

from dagtrain.report.timeline import timeline_html, timeline_png

__all__ = ["timeline_html", "timeline_png"]
