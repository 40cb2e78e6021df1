"""A saved workflow's form as native Qt widgets: protocol.forms decides the widget for each parameter (with its
default, bounds and step); this builds it, reads the raw values back for forms.collect, and shows errors beside
their fields. Widgets only: no Session, no documents."""

from __future__ import annotations

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QPlainTextEdit,
                             QSpinBox, QVBoxLayout, QWidget)

from ._vendor.protocol import forms

INT32 = (-2 ** 31, 2 ** 31 - 1)
ERROR_STYLE = "color: #e05050"


def plain_label(text: str = "") -> QLabel:
    """A label that shows text as typed: prompts and workflow texts are never read as rich text (issue 17)."""
    label = QLabel(text)
    label.setTextFormat(Qt.PlainText)
    return label


def error_label() -> QLabel:
    """Where a form's errors are shown: plain text, wrapped, in red."""
    label = plain_label()
    label.setWordWrap(True)
    label.setStyleSheet(ERROR_STYLE)
    return label


def plain_tooltip(text: str) -> str:
    """A tooltip for user text: Qt renders a tooltip that looks like HTML (has a tag) as rich text, so such text
    is escaped into a paragraph that shows it as typed."""
    if not text or "<" not in text:
        return text or ""
    return "<p style='white-space:pre-wrap'>" + (text.replace("&", "&amp;").replace("<", "&lt;")
                                                 .replace(">", "&gt;")) + "</p>"


class WorkflowForm(QWidget):
    """One row per parameter: label, widget, and an error line under it (hidden until there is one)."""

    def __init__(self, fields: list):
        super().__init__()
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.fields: dict = {}   # name -> (Field, widget, error label)
        for f in fields:
            widget = field_widget(f)
            label = plain_label(f.label + (" *" if f.required else ""))
            label.setToolTip(plain_tooltip(f.description))
            widget.setToolTip(plain_tooltip(f.description))
            error = error_label()
            error.hide()
            cell = QWidget()
            col = QVBoxLayout(cell)
            col.setContentsMargins(0, 0, 0, 0)
            col.setSpacing(1)
            col.addWidget(widget)
            col.addWidget(error)
            form.addRow(label, cell)
            self.fields[f.name] = (f, widget, error)

    def values(self) -> dict:
        """The raw values by parameter name (forms.collect checks them)."""
        raw = {}
        for name, (f, w, _) in self.fields.items():
            kind = f.widget
            if kind in (forms.CHOICE, forms.LAYER):
                raw[name] = w.currentData()
            elif kind in (forms.INT, forms.FLOAT):
                value = w.value()
                if getattr(w, "pb_unset", False) and value == w.minimum():
                    value = None        # a required number not given yet
                elif kind == forms.INT:
                    value = int(round(value))
                raw[name] = value
            elif kind == forms.TEXTAREA:
                raw[name] = w.toPlainText()
            elif kind == forms.CHECK:
                raw[name] = w.isChecked()
            elif kind == forms.SELECTION:
                raw[name] = "selection"
            else:
                raw[name] = w.text()
        return raw

    def show_errors(self, errors: dict):
        for name, (_, _, label) in self.fields.items():
            label.setText(errors.get(name, ""))
            label.setVisible(name in errors)


def _decimals(*numbers) -> int:
    """Enough decimals to show these numbers (a step of 0.05 needs 2), at least 2, at most 6."""
    out = 2
    for n in numbers:
        if n is not None and float(n) != int(float(n)):
            text = f"{float(n):.6f}".rstrip("0")
            out = max(out, len(text.split(".")[1]))
    return min(out, 6)


def field_widget(f: "forms.Field") -> QWidget:
    """The native Qt widget for one workflow parameter, with its default, bounds and step."""
    kind = f.widget
    if kind == forms.CHOICE:
        w = QComboBox()
        if f.default is None:
            w.addItem("(choose)", None)
        for choice in f.choices:
            w.addItem(str(choice), choice)
        if f.default is not None and f.default in f.choices:
            w.setCurrentIndex(f.choices.index(f.default))
        return w
    if kind in (forms.INT, forms.FLOAT):
        is_int = kind == forms.INT
        step = (f.step or 1) if is_int else (f.step or 0.1)
        lo = f.min if f.min is not None else (INT32[0] if is_int else -1e9)
        hi = f.max if f.max is not None else (INT32[1] if is_int else 1e9)
        unset = f.default is None      # required: one step below the minimum reads "(required)" = not given
        if unset:
            lo = lo - step
        wide = is_int and (lo < INT32[0] or hi > INT32[1])
        if is_int and not wide:
            w = QSpinBox()
            w.setRange(int(lo), int(hi))
            w.setSingleStep(max(1, int(step)))
        else:   # floats, and ints beyond a QSpinBox's 32 bits
            w = QDoubleSpinBox()
            w.setDecimals(0 if is_int else _decimals(step, f.min, f.max, f.default))
            w.setRange(lo, hi)
            w.setSingleStep(step)
        if unset:
            w.setSpecialValueText("(required)")
            w.pb_unset = True
            w.setValue(w.minimum())
        else:
            w.setValue(int(f.default) if isinstance(w, QSpinBox) else float(f.default))
        return w
    if kind == forms.CHECK:
        w = QCheckBox()
        w.setChecked(bool(f.default))
        return w
    if kind == forms.TEXTAREA:
        w = QPlainTextEdit(f.default or "")
        w.setMaximumHeight(70)
        return w
    if kind == forms.LAYER:
        w = QComboBox()
        w.addItem("Active layer", "layer")
        w.addItem("Composite image", "composite")
        return w
    if kind == forms.SELECTION:
        return plain_label("The selection")
    return QLineEdit("" if f.default is None else str(f.default))
