"""Outputs bounded in bytes, per cell and per notebook, on every path nbclient takes with them.

A mixin for nbclient clients: ``execute.GradingClient`` (``mlbd grade``) and
``kernel.SandboxedExecute`` (plain ``nbgrader autograde``). nbgrader's ``LimitOutput`` counts lines
after the fact, so one 50 MB line, or an ``update_display_data`` that swaps a 30 MB payload into
an earlier output, stayed whole; widget comms were kept in the grader's memory without bound, and
nbclient's Output-widget emulation raised on a malformed comm, failing the whole notebook.
"""
from __future__ import annotations

import copy
import json

import nbformat
from traitlets import Bool, HasTraits, Integer

TRUNCATED = "\n[mlbd: output truncated: this {what} exceeded {limit} bytes]\n"


OUTPUT_OVERHEAD = 64     # bytes an output costs in the notebook however empty it is


def content_size(content: dict) -> int:
    """What an output message will weigh in the notebook: its text, data, traceback and metadata
    (any JSON the kernel chose), plus a fixed cost, so a flood of empty outputs is bounded too."""
    n = OUTPUT_OVERHEAD
    meta = content.get("metadata")
    if meta:
        try:
            n += len(json.dumps(meta, default=str))
        except (TypeError, ValueError, RecursionError):
            n += 10**9
    for key in ("text", "evalue", "ename"):
        v = content.get(key)
        if isinstance(v, str):
            n += len(v)
    for v in (content.get("data") or {}).values():
        n += len(v) if isinstance(v, str) else len(str(v))
    for line in content.get("traceback") or []:
        n += len(line)
    return n


class BoundedOutputs(HasTraits):
    max_output_bytes_cell = Integer(1_000_000, help="outputs kept per cell, bytes").tag(config=True)
    max_output_bytes_notebook = Integer(8_000_000, help="outputs kept per notebook, bytes").tag(config=True)
    # grading needs no widget state: comms are ignored and outputs stay in their cells
    store_widget_state = Bool(False).tag(config=True)

    def reset_execution_trackers(self) -> None:
        super().reset_execution_trackers()
        self.cell_bytes: dict[int, int] = {}
        self.display_bytes: dict[str, int] = {}
        self.total_bytes = 0
        self.truncated: set[int] = set()

    def on_comm_open_jupyter_widget(self, msg):
        return None

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = content_size(content)
        used = self.cell_bytes.get(cell_index, 0)
        cell_room = self.max_output_bytes_cell - used
        nb_room = self.max_output_bytes_notebook - self.total_bytes
        room = min(cell_room, nb_room)
        if size > room:
            what, limit = (("cell", self.max_output_bytes_cell) if cell_room <= nb_room
                           else ("notebook", self.max_output_bytes_notebook))
            if msg["msg_type"] == "stream" and room > 0:
                msg = copy.copy(msg)
                msg["content"] = dict(content, text=content.get("text", "")[:room])
                size = room
            elif msg["msg_type"] == "error":   # always keep the failure itself, shortened
                msg = copy.copy(msg)
                msg["content"] = dict(content, evalue=str(content.get("evalue", ""))[:2000], traceback=[],
                                      ename=str(content.get("ename", "Error"))[:200])
                size = len(msg["content"]["evalue"]) + len(msg["content"]["ename"])
            else:
                size = 0
            out = super().output(outs, msg, display_id, cell_index) if size else None
            self.cell_bytes[cell_index] = used + size
            self.total_bytes += size
            if cell_index not in self.truncated:
                self.truncated.add(cell_index)
                outs.append(nbformat.v4.new_output("stream", name="stdout",
                                                   text=TRUNCATED.format(what=what, limit=limit)))
            return out
        self.cell_bytes[cell_index] = used + size
        self.total_bytes += size
        return super().output(outs, msg, display_id, cell_index)

    def process_message(self, msg, cell, cell_index):
        self.running_cell = cell_index
        return super().process_message(msg, cell, cell_index)

    def _update_display_id(self, display_id, msg):
        """``update_display_data`` (or a display with a display id used before) replaces outputs in
        place, past ``output()``: bound it too. Only outputs of the cell that is running change: an
        earlier cell's output, made before the kernel saw any hidden test and shown in feedback as
        such, must not take what a later cell writes."""
        full = self._display_id_map.get(display_id)
        if full is None:
            return None
        here = {i: v for i, v in full.items() if i == getattr(self, "running_cell", None)}
        self._display_id_map[display_id] = here
        try:
            return self._bounded_update(display_id, msg)
        finally:
            self._display_id_map[display_id] = full

    def _bounded_update(self, display_id, msg):
        cells = list(self._display_id_map.get(display_id, {}))
        size = content_size(msg.get("content", {}))
        grown = size - self.display_bytes.get(display_id, 0)
        if size > self.max_output_bytes_cell or self.total_bytes + grown > self.max_output_bytes_notebook:
            limit = min(self.max_output_bytes_cell, self.max_output_bytes_notebook)
            text = TRUNCATED.format(what="display update", limit=limit)
            msg = copy.copy(msg)
            msg["content"] = dict(msg.get("content", {}), data={"text/plain": text}, metadata={})
            size, grown = len(text), len(text) - self.display_bytes.get(display_id, 0)
            self.truncated.update(cells)
        self.display_bytes[display_id] = size
        self.total_bytes += grown
        return super()._update_display_id(display_id, msg)
