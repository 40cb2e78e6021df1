"""The "Paintbridge" docker: widgets bound to the Controller. No protocol calls, no pixel work here.

Laid out for a 1080p screen (issue 15, K3): the status line on top; the account box, folded away once signed in
("Account…" opens it again); the Generate button with the job line, the progress bar, the newest preview and the
results list (in view together even in the few lines Krita first gives a docker); then tabs for the Generate form,
Control (control layers, references and regions), Workflows, Gallery and Live. Everything scrolls when the docker is short. User text (prompts, workflow descriptions, messages) is shown as plain text.
"""

from __future__ import annotations

from krita import DockWidget
from PyQt5.QtCore import QSize, Qt
from PyQt5.QtGui import QIcon, QImage, QPixmap
from PyQt5.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame,
                             QGroupBox, QHBoxLayout, QLineEdit, QListView, QListWidget, QListWidgetItem,
                             QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSpinBox, QTabWidget,
                             QVBoxLayout, QWidget)

from ._vendor.protocol import forms, generate
from ._vendor.protocol import gallery as gallery_labels

from .controller import MODES, THUMB_SIZE, controller, guarded
from .live_panel import LiveTab
from .workflow_form import WorkflowForm, error_label, plain_label, plain_tooltip

PREVIEW = 96   # px, the newest preview beside the results list


class PaintbridgeDocker(DockWidget):
    def __init__(self):
        super().__init__()
        self.setWindowTitle("Paintbridge")
        self.ctl = controller()
        root = QWidget(self)
        lay = QVBoxLayout(root)
        lay.setContentsMargins(4, 4, 4, 4)

        # -- status line and the account (folded once signed in)
        row = QHBoxLayout()
        self.state = plain_label("disconnected")
        self.state.setWordWrap(True)
        self.account_btn = QPushButton("Account…")
        self.account_btn.setCheckable(True)
        self.account_btn.setToolTip("Server, sign in and sign out")
        row.addWidget(self.state, 1)
        row.addWidget(self.account_btn)
        lay.addLayout(row)
        lay.addWidget(self._account_box())
        lay.addWidget(self._results_box())
        self.tabs = QTabWidget()
        self.tabs.addTab(self._generate_tab(), "Generate")
        self.control_page = self._control_tab()
        self.tabs.addTab(self.control_page, "Control")
        self.tabs.addTab(self._workflows_tab(), "Workflows")
        self.tabs.addTab(self._gallery_tab(), "Gallery")
        self.live_tab = LiveTab(self.ctl)
        self.tabs.addTab(self.live_tab, "Live")
        self.models_page = self._models_tab()   # a tab only while an admin is signed in (_downloads)
        lay.addWidget(self.tabs)
        lay.addStretch(1)
        scroll = _Scroll()
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(root)
        scroll.setMinimumWidth(root.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        self.setWidget(scroll)
        self._wire()
        self._mode_changed()
        self._models(self.ctl.models)
        self._workflows(self.ctl.workflows)
        self._gallery()
        self._results()
        self._jobs()
        self._steering()
        self._state(self.ctl.state, self.ctl.status)
        self.ctl.auto_connect()   # with the stored token, if any

    # ---- building ---------------------------------------------------------------------------------------
    def _account_box(self) -> QWidget:
        f = self.ctl.form
        self.account = QGroupBox("Engine")
        form = QFormLayout(self.account)
        self.url = QLineEdit(f.url)
        self.username = QLineEdit(f.username)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.Password)
        self.remember = QCheckBox("Remember me")
        self.token = QLineEdit()
        self.token.setPlaceholderText("or paste a token")
        self.token.setEchoMode(QLineEdit.Password)
        buttons = QHBoxLayout()
        self.sign_in_btn = QPushButton("Sign in")
        self.connect_btn = QPushButton("Connect")
        self.connect_btn.setToolTip("Connect with the pasted token, or the one saved for this server")
        self.sign_out_btn = QPushButton("Sign out")
        self.sign_out_btn.setToolTip("End this sign-in on the engine and delete the token saved on this computer")
        for b in (self.sign_in_btn, self.connect_btn, self.sign_out_btn):
            buttons.addWidget(b)
        form.addRow(plain_label("Server"), self.url)
        form.addRow(plain_label("User"), self.username)
        form.addRow(plain_label("Password"), self.password)
        form.addRow(plain_label(""), self.remember)
        form.addRow(plain_label("Token"), self.token)
        form.addRow(buttons)
        return self.account

    def _generate_tab(self) -> QWidget:
        f = self.ctl.form
        page = QWidget()
        form = self.gen_form = QFormLayout(page)
        self.model = QComboBox()
        self.prompt = QPlainTextEdit(f.prompt)
        self.prompt.setMaximumHeight(70)
        self.negative = QPlainTextEdit(f.negative)
        self.negative.setMaximumHeight(45)
        self.mode = QComboBox()
        for key, label in MODES:
            self.mode.addItem(label, key)
        self.mode.setCurrentIndex(max(0, self.mode.findData(f.mode)))
        self.source = QComboBox()
        self.source.addItem("Composite image", "composite")
        self.source.addItem("Active layer", "layer")
        self.source.setCurrentIndex(0 if f.source == "composite" else 1)
        self.strength = _dspin(0.0, 1.0, 0.05, f.strength)
        self.steps = _spin(1, 200, f.steps)
        self.guidance = _dspin(0.0, 30.0, 0.5, f.guidance)
        self.seed = _spin(generate.RANDOM, generate.SEED_MAX, max(generate.RANDOM, min(f.seed, generate.SEED_MAX)))
        self.seed.setSpecialValueText("random")
        self.seed.setToolTip("-1: a random seed (the one used is shown with the job)")
        self.batch = _spin(1, 8, f.batch)
        self.upscaler = QComboBox()   # filled by _models: "plain resize" + the engine's upscaler models
        self.scale = _dspin(1.0, 8.0, 0.5, f.scale)
        self.refine = QCheckBox("Refine with the model")
        self.refine.setChecked(f.refine)
        self.refine.setToolTip("Upscale, then add detail with the model, tile by tile at its native size")
        self.refine_strength = _dspin(0.0, 1.0, 0.05, f.refine_strength)
        self.refine_strength.setToolTip("How much each tile may change (0.3: detail, keeping the picture)")
        self.lora = QComboBox()       # filled by _models: "none" + the engine's LoRAs
        self.lora_weight = _dspin(-2.0, 2.0, 0.05, f.lora_weight)
        self.extend = [_spin(0, 2048, v) for v in (f.extend_left, f.extend_top, f.extend_right, f.extend_bottom)]
        self.extend_row = QWidget()
        extend = QHBoxLayout(self.extend_row)
        extend.setContentsMargins(0, 0, 0, 0)
        for spin, side in zip(self.extend, ("left", "top", "right", "bottom")):
            spin.setPrefix(f"{side[0].upper()} ")
            spin.setSuffix(" px")
            spin.setToolTip(f"Outpaint: pixels to add on the {side} before filling")
            extend.addWidget(spin)
        self.lora_row = _pair(self.lora, self.lora_weight, stretch=True)
        self.steps_row = _pair(self.steps, plain_label("Guidance"), self.guidance)
        self.seed_row = _pair(self.seed, plain_label("Images"), self.batch)
        self.refine_row = _pair(self.refine, plain_label("Strength"), self.refine_strength)
        self.size_note = plain_label("Size: the selection, or the whole document.")
        form.addRow(plain_label("Mode"), self.mode)
        form.addRow(plain_label("Model"), self.model)
        form.addRow(plain_label("LoRA"), self.lora_row)
        form.addRow(plain_label("Prompt"), self.prompt)
        form.addRow(plain_label("Negative"), self.negative)
        form.addRow(plain_label("Read from"), self.source)
        form.addRow(plain_label("Strength"), self.strength)
        form.addRow(plain_label("Extend"), self.extend_row)
        form.addRow(plain_label("Upscaler"), self.upscaler)
        form.addRow(plain_label("Scale"), self.scale)
        form.addRow(plain_label("Refine"), self.refine_row)
        form.addRow(plain_label("Steps"), self.steps_row)
        self._sampling_rows(form)
        form.addRow(plain_label("Seed"), self.seed_row)
        form.addRow(self.size_note)
        return page

    def _sampling_rows(self, form: QFormLayout):
        """The engine's pickers (protocol.generate): sampler by A1111 label and the schedules it takes; clip skip
        and a VAE that fits the model. Filled by _models / _fill_vaes / _fill_schedules."""
        f = self.ctl.form
        self.scheduler = QComboBox()
        self.scheduler.setToolTip("The sampler, as the engine lists them")
        self.schedule = QComboBox()
        self.schedule.setToolTip("The noise schedule: the model's own, Karras, or trailing (sgm_uniform)")
        self.clip_skip = _spin(generate.CLIP_SKIP_MIN, generate.CLIP_SKIP_MAX, f.clip_skip)
        self.clip_skip.setToolTip("Use the text encoder's N-th last layer (A1111's Clip skip; 1 = off)")
        self.vae = QComboBox()
        self.vae.setToolTip("A VAE on the engine instead of the model's own")
        self.sampler_row = _pair(self.scheduler, self.schedule, stretch=True)
        self.clip_row = _pair(self.clip_skip, plain_label("VAE"), self.vae, stretch=True)
        form.addRow(plain_label("Sampler"), self.sampler_row)
        form.addRow(plain_label("Clip skip"), self.clip_row)

    def _control_tab(self) -> QWidget:
        """Control layers and references (a layer steering the picture through a ControlNet / T2I-Adapter, or its
        style through an IP-Adapter) and regions (a layer or group whose prompt applies where it has pixels): the
        active document's, kept in it (steering.py). Generate sends them; a hidden layer is left out."""
        page = QWidget()
        form = QFormLayout(page)
        self.steer_model = QComboBox()
        self.steer_model.setToolTip("A ControlNet or T2I-Adapter (control), or an IP-Adapter (reference)")
        self.steer_preprocess = QComboBox()
        for name in generate.PREPROCESSORS:
            self.steer_preprocess.addItem(name, name)
        self.steer_preprocess.setToolTip("What the engine does to the layer first: canny edges, lines from a "
                                         "sketch (scribble, lineart, invert)…; none for a depth or pose image")
        self.steer_strength = _dspin(0.0, 2.0, 0.05, 1.0)
        self.steer_start = _dspin(0.0, 1.0, 0.05, 0.0)
        self.steer_end = _dspin(0.0, 1.0, 0.05, 1.0)
        self.steer_start.setToolTip("From this fraction of the steps…")
        self.steer_end.setToolTip("…to this one")
        self.steer_add = QPushButton("Add the active layer")
        self.steer_add.setToolTip("The active layer steers the next images with this model and settings")
        self.steer_list = QListWidget()
        self.steer_list.setMaximumHeight(70)
        self.steer_remove = QPushButton("Remove")
        self.steer_message = error_label()
        self.region_prompt = QLineEdit()
        self.region_prompt.setPlaceholderText("what this layer's area shows")
        self.region_negative = QLineEdit()
        self.region_negative.setPlaceholderText("negative (optional)")
        self.region_set = QPushButton("Set on the active layer")
        self.region_set.setToolTip("The active layer or group becomes a region: this prompt (followed by the "
                                   "Generate prompt) applies where it has pixels")
        self.region_list = QListWidget()
        self.region_list.setMaximumHeight(70)
        self.region_remove = QPushButton("Remove")
        self.region_message = error_label()
        form.addRow(plain_label("Model"), _pair(self.steer_model, self.steer_preprocess, stretch=True))
        form.addRow(plain_label("Strength"), _pair(self.steer_strength, plain_label("Range"), self.steer_start,
                                                   self.steer_end))
        form.addRow(_pair(self.steer_add, self.steer_remove, stretch=True))
        form.addRow(self.steer_list)
        form.addRow(self.steer_message)
        form.addRow(plain_label("Region"), self.region_prompt)
        form.addRow(plain_label("Not"), self.region_negative)
        form.addRow(_pair(self.region_set, self.region_remove, stretch=True))
        form.addRow(self.region_list)
        form.addRow(self.region_message)
        return page

    def _models_tab(self) -> QWidget:
        """Admins: have the engine download a model (a URL, OWNER/REPO/FILE or starter:NAME) and follow it."""
        page = QWidget()
        form = QFormLayout(page)
        self.dl_source = QLineEdit()
        self.dl_source.setPlaceholderText("https://…/model.safetensors, OWNER/REPO/FILE or starter:NAME")
        self.dl_name = QLineEdit()
        self.dl_name.setPlaceholderText("empty: from the file")
        self.dl_btn = QPushButton("Download")
        self.dl_btn.setToolTip("The engine downloads, checks and registers the model; progress shows below")
        self.dl_bar = QProgressBar()
        self.dl_bar.setVisible(False)
        self.dl_list = plain_label("")
        self.dl_list.setWordWrap(True)
        form.addRow(plain_label("Download"), self.dl_source)
        form.addRow(plain_label("Name"), self.dl_name)
        form.addRow(self.dl_btn)
        form.addRow(self.dl_bar)
        form.addRow(self.dl_list)
        return page

    def _results_box(self) -> QWidget:
        """Generate, then the progress and results of generate and workflow runs: on top, so that even a docker
        Krita opens a few lines tall shows them together (the form is in the tabs below)."""
        box = QWidget()
        v = QVBoxLayout(box)
        v.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.generate_btn = QPushButton("Generate")
        self.generate_btn.setToolTip("Generate with the settings of the Generate tab")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        row.addWidget(self.generate_btn, 1)
        row.addWidget(self.cancel_btn)
        v.addLayout(row)
        self.job_line = plain_label()
        self.job_line.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        v.addWidget(self.job_line)
        v.addWidget(self.bar)
        row = QHBoxLayout()
        self.preview = plain_label()
        self.preview.setAlignment(Qt.AlignCenter)
        self.preview.setFixedSize(PREVIEW, PREVIEW)
        self.results = QListWidget()
        self.results.setMaximumHeight(PREVIEW + 24)
        row.addWidget(self.preview)
        row.addWidget(self.results, 1)
        v.addLayout(row)
        row = QHBoxLayout()
        self.apply_btn = QPushButton("Apply as new layer")
        self.replace_btn = QPushButton("Replace")
        self.replace_btn.setToolTip("Put the result in a new layer directly over the active paint layer (one Ctrl+Z undoes it)")
        self.discard_btn = QPushButton("Discard")
        for b in (self.apply_btn, self.replace_btn, self.discard_btn):
            row.addWidget(b)
        v.addLayout(row)
        self.message = plain_label()
        self.message.setWordWrap(True)
        v.addWidget(self.message)
        return box

    def _workflows_tab(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        row = QHBoxLayout()
        self.wf_combo = QComboBox()
        self.wf_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.wf_refresh = QPushButton("Refresh")
        row.addWidget(self.wf_combo, 1)
        row.addWidget(self.wf_refresh)
        v.addLayout(row)
        self.wf_desc = plain_label()
        self.wf_desc.setWordWrap(True)
        v.addWidget(self.wf_desc)
        self.wf_holder = QVBoxLayout()      # receives the form of the chosen workflow
        v.addLayout(self.wf_holder)
        self.wf_form: WorkflowForm | None = None
        self._wf_key = None
        self.wf_message = error_label()
        v.addWidget(self.wf_message)
        row = QHBoxLayout()
        self.wf_run = QPushButton("Run")
        self.wf_cancel = QPushButton("Cancel")
        self.wf_cancel.setEnabled(False)
        row.addWidget(self.wf_run)
        row.addWidget(self.wf_cancel)
        v.addLayout(row)
        v.addStretch(1)
        return page

    def _gallery_tab(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        row = QHBoxLayout()
        self.gallery_q = QLineEdit()
        self.gallery_q.setPlaceholderText("Search prompts")
        self.gallery_q.setClearButtonEnabled(True)
        self.gallery_refresh = QPushButton("Refresh")
        row.addWidget(self.gallery_q, 1)
        row.addWidget(self.gallery_refresh)
        v.addLayout(row)
        row = QHBoxLayout()
        self.gallery_this_doc = QCheckBox("This document only")
        self.gallery_starred = QCheckBox("Starred")
        row.addWidget(self.gallery_this_doc)
        row.addWidget(self.gallery_starred)
        row.addStretch(1)
        v.addLayout(row)
        self.gallery_list = QListWidget()
        self.gallery_list.setViewMode(QListView.IconMode)
        self.gallery_list.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.gallery_list.setGridSize(QSize(THUMB_SIZE + 24, THUMB_SIZE + 44))
        self.gallery_list.setResizeMode(QListView.Adjust)
        self.gallery_list.setMovement(QListView.Static)
        self.gallery_list.setWordWrap(True)
        self.gallery_list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.gallery_list.setMinimumHeight(THUMB_SIZE + 60)
        v.addWidget(self.gallery_list)
        row = QHBoxLayout()
        self.gallery_count = plain_label()
        self.gallery_more = QPushButton("Load more")
        row.addWidget(self.gallery_count, 1)
        row.addWidget(self.gallery_more)
        v.addLayout(row)
        row = QHBoxLayout()
        self.use_btn = QPushButton("Use settings")
        self.use_btn.setToolTip("Fill the Generate form with this image's prompt, model, seed and settings")
        self.add_btn = QPushButton("Add to document")
        self.add_btn.setToolTip("Add this image to the document as a layer in the Paintbridge group")
        self.star_btn = QPushButton("Star")
        for b in (self.use_btn, self.add_btn, self.star_btn):
            row.addWidget(b)
        v.addLayout(row)
        self._icons: dict = {}              # image id -> QIcon (thumbnails are decoded once)
        return page

    def _wire(self):
        ctl = self.ctl
        self.account_btn.toggled.connect(guarded(self._fold_account))
        self.sign_in_btn.clicked.connect(guarded(self._sign_in))
        self.connect_btn.clicked.connect(guarded(lambda: ctl.connect_server(self.url.text().strip(),
                                                                          self.token.text().strip() or None)))
        self.sign_out_btn.clicked.connect(guarded(self._sign_out))
        self.generate_btn.clicked.connect(guarded(self._generate))
        self.cancel_btn.clicked.connect(guarded(ctl.cancel))
        self.apply_btn.clicked.connect(guarded(lambda: self._apply(False)))
        self.replace_btn.clicked.connect(guarded(lambda: self._apply(True)))
        self.discard_btn.clicked.connect(guarded(self._discard))
        self.results.currentRowChanged.connect(guarded(self._result_selection))
        self.mode.currentIndexChanged.connect(guarded(self._mode_changed))
        self.refine.toggled.connect(guarded(self._mode_changed))
        self.model.currentIndexChanged.connect(guarded(self._fill_loras))
        self.model.currentIndexChanged.connect(guarded(self._fill_vaes))
        self.scheduler.currentIndexChanged.connect(guarded(self._fill_schedules))
        self.dl_btn.clicked.connect(guarded(self._download))
        self.steer_model.currentIndexChanged.connect(guarded(self._steer_preset))
        self.steer_add.clicked.connect(guarded(self._add_steering))
        self.steer_remove.clicked.connect(guarded(lambda: self._remove_selected(self.steer_list)))
        self.region_set.clicked.connect(guarded(lambda: ctl.set_region(self.region_prompt.text(),
                                                                       self.region_negative.text())))
        self.region_remove.clicked.connect(guarded(lambda: self._remove_selected(self.region_list)))
        self.region_list.currentItemChanged.connect(guarded(self._region_selected))
        ctl.steering_changed.connect(guarded(self._steering))
        ctl.steer_errors.connect(guarded(self._steer_errors))
        ctl.downloads_changed.connect(guarded(self._downloads))
        ctl.state_changed.connect(guarded(self._state))
        ctl.models_changed.connect(guarded(self._models))
        ctl.progress.connect(guarded(self._progress))
        ctl.jobs_changed.connect(guarded(self._jobs))
        ctl.results_changed.connect(guarded(self._results))
        ctl.busy_changed.connect(guarded(self._busy))
        ctl.message.connect(self.message.setText)
        ctl.form_changed.connect(guarded(self._show_form))
        ctl.gallery_changed.connect(guarded(self._gallery))
        ctl.workflows_changed.connect(guarded(self._workflows))
        ctl.workflow_errors.connect(guarded(self._workflow_errors))
        self.gallery_refresh.clicked.connect(guarded(self._refresh_gallery))
        self.gallery_q.returnPressed.connect(guarded(self._refresh_gallery))
        self.gallery_this_doc.toggled.connect(guarded(self._refresh_gallery))
        self.gallery_starred.toggled.connect(guarded(self._refresh_gallery))
        self.gallery_more.clicked.connect(guarded(ctl.load_more_images))
        self.gallery_list.currentItemChanged.connect(guarded(self._gallery_selection))
        self.use_btn.clicked.connect(guarded(lambda: self._with_image(ctl.use_settings)))
        self.add_btn.clicked.connect(guarded(lambda: self._with_image(ctl.add_image)))
        self.star_btn.clicked.connect(guarded(self._star))
        self.wf_refresh.clicked.connect(guarded(ctl.refresh_workflows))
        self.wf_combo.currentIndexChanged.connect(guarded(self._build_workflow_form))
        self.wf_run.clicked.connect(guarded(self._run_workflow))
        self.wf_cancel.clicked.connect(guarded(ctl.cancel))

    def canvasChanged(self, canvas):
        """Another document (view) became active: the Control tab shows its lists."""
        self.ctl.steer_check()

    # ---- actions ------------------------------------------------------------------------------------------
    def _fold_account(self, show: bool):
        self.account.setVisible(show or self.ctl.state != "connected")

    def _sign_in(self):
        if self.ctl.sign_in(self.url.text().strip(), self.username.text().strip(), self.password.text(),
                            self.remember.isChecked()):
            self.password.clear()

    def _sign_out(self):
        self.token.clear()      # a pasted token would sign straight back in with one click on Connect
        self.password.clear()
        self.ctl.sign_out()

    def _read_form(self):
        f = self.ctl.form
        f.model = self.model.currentData() or ""
        f.prompt = self.prompt.toPlainText()
        f.negative = self.negative.toPlainText()
        f.mode = self.mode.currentData()
        f.source = self.source.currentData()
        f.strength, f.steps, f.guidance = self.strength.value(), self.steps.value(), self.guidance.value()
        f.seed, f.batch = self.seed.value(), self.batch.value()
        f.upscaler, f.scale = self.upscaler.currentData() or "", self.scale.value()
        f.refine, f.refine_strength = self.refine.isChecked(), self.refine_strength.value()
        f.lora, f.lora_weight = self.lora.currentData() or "", self.lora_weight.value()
        f.scheduler = self.scheduler.currentData() or f.scheduler
        f.schedule = self.schedule.currentData() or f.schedule
        f.clip_skip, f.vae = self.clip_skip.value(), self.vae.currentData() or ""
        f.extend_left, f.extend_top, f.extend_right, f.extend_bottom = (s.value() for s in self.extend)

    def _generate(self):
        self._read_form()
        self.preview.clear()
        self.ctl.generate()

    def _apply(self, replace: bool):
        row = self.results.currentRow()
        if row >= 0:
            self.ctl.apply(row, replace)

    def _discard(self):
        row = self.results.currentRow()
        if row >= 0:
            self.ctl.discard(row)

    def _refresh_gallery(self):
        if self.ctl.state == "connected":
            self.ctl.refresh_gallery(self.gallery_this_doc.isChecked(), self.gallery_starred.isChecked(),
                                     self.gallery_q.text())

    def selected_image(self) -> str | None:
        item = self.gallery_list.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def _with_image(self, action):
        image = self.selected_image()
        if image:
            action(image)

    def _star(self):
        image = self.selected_image()
        im = self.ctl.gallery_image(image) if image else None
        if im is not None:
            self.ctl.star_image(image, not im.get("starred"))

    @property
    def wf_fields(self) -> dict:
        return self.wf_form.fields if self.wf_form is not None else {}

    def workflow_values(self) -> dict:
        return self.wf_form.values() if self.wf_form is not None else {}

    def _run_workflow(self):
        self.preview.clear()
        self.ctl.run_workflow(self.wf_combo.currentData() or "", self.workflow_values())

    def _add_steering(self):
        self.ctl.add_steering(self.steer_model.currentData() or "", {
            "preprocess": self.steer_preprocess.currentData(), "strength": self.steer_strength.value(),
            "start": self.steer_start.value(), "end": self.steer_end.value()})

    def _remove_selected(self, lst: QListWidget):
        item = lst.currentItem()
        if item is not None:
            kind, index = item.data(Qt.UserRole)
            self.ctl.remove_steering(kind, index)

    def _region_selected(self, *_):
        item = self.region_list.currentItem()
        if item is not None:
            settings = item.data(Qt.UserRole + 1) or {}
            self.region_prompt.setText(settings.get("prompt", ""))
            self.region_negative.setText(settings.get("negative_prompt", ""))

    # ---- views of controller state ------------------------------------------------------------------------
    def _mode_changed(self):
        mode = generate.MODES.get(self.mode.currentData()) or generate.MODES["txt2img"]
        refine = self.refine.isChecked()

        def uses(name):   # Upscale's model, prompt, steps and seed apply with "Refine with the model" only
            return generate.field_applies(mode.name, name, refine)

        shown = {self.model: uses("model"), self.lora_row: uses("lora"),
                 self.prompt: uses("prompt"), self.negative: uses("negative_prompt"),
                 self.source: mode.image, self.strength: uses("strength"),
                 self.extend_row: mode.name == "outpaint", self.upscaler: uses("upscaler"),
                 self.scale: uses("scale"), self.steps_row: uses("steps"), self.seed_row: uses("seed"),
                 self.refine_row: uses("refine"), self.size_note: mode.name == "txt2img",
                 self.sampler_row: uses("scheduler"), self.clip_row: uses("clip_skip")}
        for widget, visible in shown.items():
            widget.setVisible(visible)
            label = self.gen_form.labelForField(widget)
            if label is not None:
                label.setVisible(visible)
        # the same widgets also say whether they apply (scripts and screen readers read isEnabled)
        for widget, visible in shown.items():
            widget.setEnabled(visible)
        self.lora.setEnabled(uses("lora"))
        self.lora_weight.setEnabled(uses("lora_weight"))
        self.refine.setEnabled(uses("refine"))   # the row's checkbox stays usable to turn refine on
        self.refine_strength.setEnabled(uses("refine_strength"))
        for spin in self.extend:
            spin.setEnabled(mode.name == "outpaint")

    def _state(self, state: str, status: str):
        self.state.setText(status or state)
        connected = state == "connected"
        self.account.setVisible(not connected or self.account_btn.isChecked())
        self.generate_btn.setEnabled(connected)
        self.wf_run.setEnabled(connected and self.wf_combo.currentData() is not None)
        self.gallery_refresh.setEnabled(connected)
        self._gallery_selection()
        if connected and self.ctl.gallery.generation == 0:
            self._refresh_gallery()

    def _models(self, models: list):
        self.model.clear()
        for m in models:
            self.model.addItem(f"{m['name']} ({m.get('base') or '?'})", m["name"])
        names = [m["name"] for m in models]
        if self.ctl.form.model in names:
            self.model.setCurrentIndex(names.index(self.ctl.form.model))
        self.upscaler.clear()
        self.upscaler.addItem("Plain resize (no model)", "")
        for m in self.ctl.upscalers:
            self.upscaler.addItem(m["name"], m["name"])
        self.upscaler.setCurrentIndex(max(0, self.upscaler.findData(self.ctl.form.upscaler)))
        self._fill_loras()
        keep = self.ctl.form.scheduler
        self.scheduler.blockSignals(True)
        self.scheduler.clear()
        for c in generate.scheduler_choices(self.ctl.samplers):
            self.scheduler.addItem(c.label, c.value)
        self.scheduler.setCurrentIndex(max(0, self.scheduler.findData(keep)))
        self.scheduler.blockSignals(False)
        self._fill_schedules()
        self._fill_vaes()
        self._fill_steer_models()

    def _fill_steer_models(self):
        keep = self.steer_model.currentData()
        self.steer_model.blockSignals(True)
        self.steer_model.clear()
        for name, kind in self.ctl.steer_models():
            self.steer_model.addItem(f"{name} ({'reference' if kind == 'ip_adapter' else 'control'})", name)
        self.steer_model.setCurrentIndex(max(0, self.steer_model.findData(keep)))
        self.steer_model.blockSignals(False)
        self._steer_preset()

    def _steer_preset(self, *_):
        """A picked model fills in its preset (models.list): preprocess, strength and range."""
        model = self.steer_model.currentData() or ""
        control = self.ctl.steering.kind_of(model) != "references"
        p = self.ctl.steering.preset(model) if model else {}
        self.steer_preprocess.setEnabled(control)
        self.steer_preprocess.setCurrentIndex(max(0, self.steer_preprocess.findData(p.get("preprocess", "none"))))
        self.steer_strength.setValue(float(p.get("strength", 1.0)))
        self.steer_start.setValue(float(p.get("start", 0.0)))
        self.steer_end.setValue(float(p.get("end", 1.0)))
        self.steer_add.setEnabled(bool(model))

    def _steering(self):
        """The active document's controls, references and regions."""
        entries = self.ctl.steer_entries()
        for lst, kinds in ((self.steer_list, ("controls", "references")), (self.region_list, ("regions",))):
            keep = lst.currentItem().data(Qt.UserRole) if lst.currentItem() is not None else None
            lst.blockSignals(True)
            lst.clear()
            for e in entries:
                if e.kind not in kinds:
                    continue
                label = e.describe() if e.kind == "regions" else \
                    f"{'Control' if e.kind == 'controls' else 'Reference'} · {e.describe()}"
                item = QListWidgetItem(label)
                item.setData(Qt.UserRole, (e.kind, e.index))
                item.setData(Qt.UserRole + 1, e.settings)
                item.setToolTip(plain_tooltip(label))
                lst.addItem(item)
                if (e.kind, e.index) == keep:
                    lst.setCurrentItem(item)
            lst.blockSignals(False)
        self.steer_remove.setEnabled(self.steer_list.count() > 0)
        self.region_remove.setEnabled(self.region_list.count() > 0)

    def _steer_errors(self, errors: dict):
        self.steer_message.setText(errors.get("control") or errors.get("reference") or "")
        self.region_message.setText(errors.get(generate.REGIONS) or "")
        if errors:
            self.tabs.setCurrentWidget(self.control_page)

    def _fill_schedules(self):
        """The schedule picker holds the schedules the chosen sampler takes."""
        keep = self.schedule.currentData() or self.ctl.form.schedule
        sampler = self.scheduler.currentData() or self.ctl.form.scheduler
        self.schedule.clear()
        for c in generate.schedule_choices(self.ctl.samplers, sampler):
            self.schedule.addItem(c.label, c.value)
        self.schedule.setCurrentIndex(max(0, self.schedule.findData(
            generate.fit_schedule(self.ctl.samplers, sampler, keep))))

    def _fill_vaes(self):
        """The VAE picker holds the model's own and the VAEs that fit the chosen model; the size note says the
        size the model is made for (protocol.generate.native_size)."""
        keep = self.vae.currentData() if self.vae.count() else self.ctl.form.vae
        model = self.model.currentData() or ""
        self.vae.clear()
        for c in generate.vae_choices(self.ctl.vaes, self.ctl.models, model):
            self.vae.addItem(c.label, c.value)
        self.vae.setCurrentIndex(max(0, self.vae.findData(keep)))
        note = "Size: the selection, or the whole document."
        if model:
            note += f" {model} is made for {generate.native_size(self.ctl.model_entry(model))} px."
        self.size_note.setText(note)

    def _download(self):
        if self.ctl.download_model(self.dl_source.text().strip(), self.dl_name.text().strip()):
            self.dl_source.clear()
            self.dl_name.clear()

    def _downloads(self):
        """The Models tab: only for an admin; each download's line, and the bar of the newest running one."""
        index = self.tabs.indexOf(self.models_page)
        if self.ctl.is_admin and index < 0:
            self.tabs.addTab(self.models_page, "Models")
        elif not self.ctl.is_admin and index >= 0:
            self.tabs.removeTab(index)
        rows = self.ctl.downloads()
        self.dl_list.setText("\n".join(r.describe() for r in rows))
        running = [r for r in rows if r.active]
        self.dl_bar.setVisible(bool(running))
        if running:
            frac = running[-1].fraction
            if frac is None:
                self.dl_bar.setRange(0, 0)
            else:
                self.dl_bar.setRange(0, 1000)
                self.dl_bar.setValue(int(1000 * frac))

    def _fill_loras(self):
        """The LoRA picker holds the LoRAs that fit the chosen model (its base)."""
        keep = self.lora.currentData() or self.ctl.form.lora
        self.lora.clear()
        self.lora.addItem("None", "")
        for m in forms.loras_for(self.ctl.loras, self.ctl.models, self.model.currentData() or ""):
            self.lora.addItem(f"{m['name']} ({m.get('base') or '?'})", m["name"])
        self.lora.setCurrentIndex(max(0, self.lora.findData(keep)))

    def _progress(self, job: str, step: int, total: int, preview):
        if preview is not None:
            img = QImage(preview.data, preview.w, preview.h, preview.w * 4, QImage.Format_ARGB32)  # BGRA bytes
            self.preview.setPixmap(QPixmap.fromImage(img.copy()).scaled(
                PREVIEW, PREVIEW, Qt.KeepAspectRatio, Qt.SmoothTransformation))

    def _jobs(self):
        """The newest job's line and bar: sending, queued, loading the model, step n of m, done, failed…"""
        row = self.ctl.session.jobs.latest()
        if row is None:
            self.job_line.setText("")
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
            return
        line = row.describe()
        if row.active and row.seed is not None:
            line += f" · seed {row.seed}"
        self.job_line.setText(line)
        if row.total:
            self.bar.setRange(0, row.total)
            self.bar.setValue(row.step)
        elif row.active:
            self.bar.setRange(0, 0)     # busy: queued or loading the model, before step 1
        else:
            self.bar.setRange(0, 1)
            self.bar.setValue(1 if row.state == "completed" else 0)

    def _results(self):
        self.results.clear()
        for r in self.ctl.results:
            px = r.layer.pixels
            item = QListWidgetItem(f"{r.layer.name}  ({px.w}×{px.h} at {px.x},{px.y})")
            self.results.addItem(item)
        if self.ctl.results:
            self.results.setCurrentRow(len(self.ctl.results) - 1)
        self._result_selection()

    def _result_selection(self, *_):
        row = self.results.currentRow()
        has = 0 <= row < len(self.ctl.results)
        for b in (self.apply_btn, self.replace_btn, self.discard_btn):
            b.setEnabled(has)
        opens = has and self.ctl.opens_document(row)
        self.apply_btn.setText("Open as new document" if opens else "Apply as new layer")
        self.replace_btn.setEnabled(has and not opens)

    def _busy(self, busy: bool):
        self.cancel_btn.setEnabled(busy)
        self.wf_cancel.setEnabled(busy)

    def _show_form(self):
        """The Form was refilled from an image (Use settings): show it."""
        f = self.ctl.form
        self.prompt.setPlainText(f.prompt)
        self.negative.setPlainText(f.negative)
        i = self.mode.findData(f.mode)
        if i >= 0:
            self.mode.setCurrentIndex(i)
        self.strength.setValue(f.strength)
        self.steps.setValue(f.steps)
        self.guidance.setValue(f.guidance)
        self.seed.setValue(max(generate.RANDOM, min(f.seed, generate.SEED_MAX)))
        i = self.model.findData(f.model)
        if i >= 0:
            self.model.setCurrentIndex(i)
        self.scale.setValue(f.scale)
        self.upscaler.setCurrentIndex(max(0, self.upscaler.findData(f.upscaler)))
        self.refine.setChecked(f.refine)
        self.refine_strength.setValue(f.refine_strength)
        self.lora.setCurrentIndex(max(0, self.lora.findData(f.lora)))
        self.lora_weight.setValue(f.lora_weight)
        self.scheduler.setCurrentIndex(max(0, self.scheduler.findData(f.scheduler)))
        self._fill_schedules()
        self.schedule.setCurrentIndex(max(0, self.schedule.findData(f.schedule)))
        self.clip_skip.setValue(max(generate.CLIP_SKIP_MIN, min(f.clip_skip, generate.CLIP_SKIP_MAX)))
        self._fill_vaes()
        self.vae.setCurrentIndex(max(0, self.vae.findData(f.vae)))
        for spin, v in zip(self.extend, (f.extend_left, f.extend_top, f.extend_right, f.extend_bottom)):
            spin.setValue(v)
        self.tabs.setCurrentIndex(0)

    def _gallery(self):
        browser = self.ctl.gallery
        keep = self.selected_image()
        ids = {im["id"] for im in browser.items}
        self._icons = {k: v for k, v in self._icons.items() if k in ids}
        self.gallery_list.clear()
        for im in browser.items:
            icon = self._icons.get(im["id"])
            if icon is None:
                icon = self._icons[im["id"]] = _thumb_icon(im.get("thumbnail"))
            item = QListWidgetItem(icon, gallery_labels.caption(im, width=16))
            item.setData(Qt.UserRole, im["id"])
            item.setToolTip(plain_tooltip(gallery_labels.tooltip(im)))
            self.gallery_list.addItem(item)
            if im["id"] == keep:
                self.gallery_list.setCurrentItem(item)
        self.gallery_count.setText(browser.status())
        self.gallery_more.setEnabled(browser.has_more and not browser.loading)
        self._gallery_selection()

    def _gallery_selection(self, *_):
        image = self.selected_image()
        im = self.ctl.gallery_image(image) if image else None
        connected = self.ctl.state == "connected"
        for b in (self.use_btn, self.add_btn, self.star_btn):
            b.setEnabled(im is not None and connected)
        self.star_btn.setText("Unstar" if im is not None and im.get("starred") else "Star")

    def _workflows(self, workflows: list):
        current = self.wf_combo.currentData()
        self.wf_combo.blockSignals(True)
        self.wf_combo.clear()
        for w in workflows:
            self.wf_combo.addItem(w["name"], w["name"])
            if w.get("description"):
                self.wf_combo.setItemData(self.wf_combo.count() - 1, plain_tooltip(w["description"]),
                                          Qt.ToolTipRole)
        i = self.wf_combo.findData(current) if current else -1
        self.wf_combo.setCurrentIndex(i if i >= 0 else (0 if workflows else -1))
        self.wf_combo.blockSignals(False)
        self._build_workflow_form()

    def _build_workflow_form(self, *_):
        """The chosen workflow's form; rebuilt only when the workflow or its parameters change, so typed values
        survive a refresh."""
        name = self.wf_combo.currentData()
        wf = self.ctl.workflow(name) if name else None
        key = (name, repr(wf.get("params")) if wf else None)
        if key == self._wf_key:
            return
        self._wf_key = key
        if self.wf_form is not None:   # gone at once: deleteLater alone leaves it drawn until the loop runs
            self.wf_holder.removeWidget(self.wf_form)
            self.wf_form.hide()
            self.wf_form.setParent(None)
            self.wf_form.deleteLater()
        self.wf_form = WorkflowForm(self.ctl.workflow_fields(name) if name else [])
        self.wf_holder.addWidget(self.wf_form)
        self.wf_desc.setText((wf or {}).get("description") or ("" if wf else "No workflows saved yet."))
        self.wf_message.clear()
        self.wf_run.setEnabled(wf is not None and self.ctl.state == "connected")

    def _workflow_errors(self, errors: dict):
        if self.wf_form is not None:
            self.wf_form.show_errors(errors)
        self.wf_message.setText(errors.get("", "") or ("Fix the fields marked above." if errors else ""))


class _Scroll(QScrollArea):
    """Asks for the height of its content (up to what a 1080p screen has under Krita's menus), so the docker
    does not open a few lines tall with the status line cut off; it scrolls when given less."""

    def sizeHint(self):
        hint = super().sizeHint()
        content = self.widget()
        if content is not None:
            hint.setHeight(min(content.sizeHint().height(), 900))
        return hint


def _pair(*widgets, stretch: bool = False) -> QWidget:
    """Widgets side by side on one form row (saves height)."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    for i, w in enumerate(widgets):
        row.addWidget(w, 1 if stretch and i == 0 else 0)
    return box


def _spin(lo, hi, value):
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


def _dspin(lo, hi, step, value, decimals=2):
    s = QDoubleSpinBox()
    s.setDecimals(decimals)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    return s


def _thumb_icon(px) -> QIcon:
    """A gallery thumbnail (BGRA Pixels, i.e. QImage's ARGB32 on little-endian) as an icon; copied so the
    image owns its pixels."""
    if px is None:
        return QIcon()
    img = QImage(px.data, px.w, px.h, px.w * 4, QImage.Format_ARGB32).copy()
    return QIcon(QPixmap.fromImage(img))
