"""Rendering students' notebooks as HTML for staff and students (the formgrader, feedback).

Everything here plugs into nbconvert's own hooks, configured in ``nbgrader_config.py``:
``sanitize`` (an allowlist sanitizer for every piece of student content), ``rubric`` (the mark
scheme next to each manually graded answer, formgrader only).
"""
