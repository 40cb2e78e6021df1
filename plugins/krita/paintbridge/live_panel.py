"""The docker's Live tab: widgets bound to controller.live (live.py). No protocol calls, no pixel work here
(the result preview is one QImage wrap of the result's BGRA bytes, scaled by Qt)."""

from __future__ import annotations

from PyQt5.QtCore import Qt
from PyQt5.QtGui import QImage, QPixmap
from PyQt5.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QPlainTextEdit,
                             QProgressBar, QPushButton, QWidget)

from .controller import guarded
from .live import PRESETS
from .workflow_form import plain_label

RESULT_PX = 192   # the newest live result, longest side


class LiveTab(QWidget):
    def __init__(self, ctl):
        super().__init__()
        self.ctl = ctl
        self.live = ctl.live
        form = QFormLayout(self)
        self.prompt = QPlainTextEdit(self.live.prompt)
        self.prompt.setMaximumHeight(60)
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.05, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(self.live.strength)
        self.strength.setToolTip("How much the canvas may change (0.3: keep the drawing, add detail)")
        self.preset = QComboBox()
        for key, label in PRESETS:
            self.preset.addItem(label, key)
        self.preset.setToolTip("A few-step set-up; LCM, Hyper-SD and Lightning need their LoRA on the engine")
        self.preempt = QCheckBox("Stop the running image when the canvas changes")
        self.start_btn = QPushButton("Start live")
        self.start_btn.setCheckable(True)
        self.apply_btn = QPushButton("Apply as layer")
        self.apply_btn.setToolTip("Copy the newest live result into the document as a new layer (one undo step)")
        self.busy = QProgressBar()
        self.busy.setTextVisible(False)
        self.busy.setMaximumHeight(8)
        self.status = plain_label("Live: off")
        self.status.setWordWrap(True)
        self.result = plain_label("")   # shows a pixmap; plain text like every label (issue 17)
        self.result.setAlignment(Qt.AlignCenter)
        self.result.setFixedSize(RESULT_PX, RESULT_PX)   # a new image must not re-lay-out the whole docker
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.apply_btn)
        form.addRow(plain_label("Prompt"), self.prompt)
        form.addRow(plain_label("Strength"), self.strength)
        form.addRow(plain_label("Preset"), self.preset)
        form.addRow(self.preempt)
        form.addRow(buttons)
        form.addRow(self.busy)
        form.addRow(self.status)
        form.addRow(self.result)
        self.start_btn.toggled.connect(guarded(self._toggle))
        self.apply_btn.clicked.connect(guarded(self._apply))
        self.prompt.textChanged.connect(guarded(self._settings))
        self.strength.valueChanged.connect(guarded(self._settings))
        self.preset.currentIndexChanged.connect(guarded(self._settings))
        self.preempt.toggled.connect(guarded(self._settings))
        self.live.changed_state.connect(guarded(self._draw))
        self._shown_job = None
        self._draw()

    def _settings(self):
        self.live.set_settings(self.prompt.toPlainText(), self.strength.value(), self.preset.currentData() or "",
                               self.preempt.isChecked())

    def _toggle(self, on: bool):
        if on:
            self._settings()
            self.live.start()
            if not self.live.live.on:   # refused (no document): the button goes back
                self.start_btn.setChecked(False)
        else:
            self.live.stop()

    def _apply(self):
        if self.live.apply():
            self.ctl.message.emit("Live result added as a layer")

    def _draw(self):
        ctl = self.live.live
        self.start_btn.blockSignals(True)
        self.start_btn.setChecked(ctl.on)
        self.start_btn.blockSignals(False)
        self.start_btn.setText("Stop live" if ctl.on else "Start live")
        # busy: Qt's moving indicator (animated by the style's timer); the step is in the status line. A value
        # per step would cost a synchronous repaint each (QProgressBar.setValue repaints at once): ~20 ms here
        total = 0 if ctl.busy else 1
        if self.busy.maximum() != total:
            self.busy.setRange(0, total)
        text = ctl.describe()
        if text != self.status.text():   # every step redraws: set only what changed
            self.status.setText(text)
        self.apply_btn.setEnabled(bool(ctl.result))
        shown = ctl.result[0].pixels if ctl.result else ctl.preview
        key = (ctl.result_job, id(shown))
        if shown is not None and key != self._shown_job:
            self._shown_job = key
            img = QImage(shown.data, shown.w, shown.h, shown.w * 4, QImage.Format_ARGB32)
            self.result.setPixmap(QPixmap.fromImage(img).scaled(RESULT_PX, RESULT_PX, Qt.KeepAspectRatio,
                                                                Qt.SmoothTransformation))
