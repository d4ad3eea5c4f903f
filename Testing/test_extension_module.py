"""Contracts between FOVCompletion.py and its .ui file, checked without Slicer (which CI cannot install).

- every SlicerParameterName in the .ui names a parameter-node field, and every field has a widget (bound by name,
  or listed in MANUALLY_SYNCHRONISED_WIDGETS);
- each bound widget can represent its field's type, following the `canRepresent` rules of Slicer's
  Base/Python/slicer/parameterNodeWrapper/guiConnectors.py (connectGui raises at run time otherwise);
- every `self.ui.<name>` the module uses exists in the .ui; MRML widgets get the scene;
- FOVCompletion.py compiles and the files it loads exist.
"""

from __future__ import annotations

import ast
import enum
import importlib
import py_compile
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[1] / "FOVCompletion"
SOURCE = MODULE / "FOVCompletion.py"
UI_FILE = MODULE / "Resources" / "UI" / "FOVCompletion.ui"
sys.path.insert(0, str(MODULE))

# Widget classes each field type can be bound to (guiConnectors.py, the connectors' canRepresent).
WIDGETS_FOR_TYPE = {
    "int": {"QSpinBox", "QSlider", "QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider",
            "ctkDoubleSpinBox", "qMRMLSpinBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider", "ctkDoubleSpinBox",
              "qMRMLSpinBox"},
    "bool": {"QCheckBox", "QPushButton", "ctkCheckablePushButton"},
    "str": {"QLineEdit", "QLabel", "QTextEdit"},
    "enum": {"QComboBox", "ctkComboBox"},
    "node": {"qMRMLNodeComboBox"},
}  # fmt: skip
UNBOUNDED_NOT_ALLOWED = {"QSlider", "ctkSliderWidget", "qMRMLSliderWidget"}  # need WithinRange bounds


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(SOURCE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ui() -> ElementTree.Element:
    return ElementTree.parse(UI_FILE).getroot()


def ui_widgets(ui) -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ui.iter("widget")}


def bound_widgets(ui) -> dict[str, tuple[str, str]]:
    """parameter name -> (widget name, widget class) from the SlicerParameterName dynamic properties."""
    bound = {}
    for widget in ui.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "SlicerParameterName must be a dynamic property (stdset=0)"
                name = prop.findtext("string")
                assert name not in bound, f"{name} is bound to two widgets"
                bound[name] = (widget.get("name"), widget.get("class"))
    return bound


def imported_names(tree) -> dict[str, str]:
    """Name -> module for `from X import Name` at the top of the module."""
    return {alias.asname or alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}  # fmt: skip


def parameter_fields(tree) -> dict[str, tuple[str, list[str]]]:
    """Field -> (base type name, annotation names) of the @parameterNodeWrapper class."""
    [cls] = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    fields = {}
    for statement in cls.body:
        if isinstance(statement, ast.AnnAssign):
            annotation = statement.annotation
            extras = []
            if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == "Annotated":
                base, *rest = annotation.slice.elts
                extras = [ast.unparse(r) for r in rest]
                annotation = base
            fields[statement.target.id] = (ast.unparse(annotation), extras)
    return fields


def type_category(type_name: str, imports: dict[str, str]) -> str:
    if type_name in ("int", "float", "bool", "str"):
        return type_name
    if type_name.startswith("vtkMRML"):
        return "node"
    module = importlib.import_module(imports[type_name])
    assert issubclass(getattr(module, type_name), enum.Enum), type_name
    return "enum"


def manually_synchronised(tree) -> dict[str, str]:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == "MANUALLY_SYNCHRONISED_WIDGETS"
        ):
            return ast.literal_eval(node.value)
    return {}


def test_module_compiles(tmp_path):
    py_compile.compile(str(SOURCE), cfile=str(tmp_path / "FOVCompletion.pyc"), doraise=True)


def test_every_bound_widget_names_a_field_and_every_field_has_a_widget(tree, ui):
    fields = parameter_fields(tree)
    bound = bound_widgets(ui)
    manual = manually_synchronised(tree)
    assert set(bound) <= set(fields), f"SlicerParameterName without a field: {set(bound) - set(fields)}"
    assert not set(bound) & set(manual), "a field is bound both by name and by hand"
    assert set(fields) == set(bound) | set(manual), (
        f"fields without a widget: {set(fields) - set(bound) - set(manual)}"
    )
    widgets = ui_widgets(ui)
    for field, widget in manual.items():
        assert widget in widgets, f"{widget} (for {field}) is not in the .ui"
        assert f"self._parameterNode.{field} = " in SOURCE.read_text(), (
            f"{field} is never written from its widget"
        )


def test_bound_widgets_can_represent_their_field_type(tree, ui):
    fields = parameter_fields(tree)
    imports = imported_names(tree)
    for name, (widget, widget_class) in bound_widgets(ui).items():
        type_name, extras = fields[name]
        category = type_category(type_name, imports)
        assert widget_class in WIDGETS_FOR_TYPE[category], (
            f"{widget} ({widget_class}) cannot show a {type_name}"
        )
        if widget_class in UNBOUNDED_NOT_ALLOWED:
            assert any(e.startswith("WithinRange") for e in extras), (
                f"{widget} needs a WithinRange annotation"
            )


def test_enum_fields_have_labels(tree):
    imports = imported_names(tree)
    for type_name, _extras in parameter_fields(tree).values():
        if type_name in imports and type_category(type_name, imports) == "enum":
            enum_type = getattr(importlib.import_module(imports[type_name]), type_name)
            assert all(isinstance(member.label(), str) for member in enum_type)


def test_every_ui_attribute_used_exists(ui):
    used = set(re.findall(r"self\.ui\.(\w+)", SOURCE.read_text(encoding="utf-8")))
    missing = used - set(ui_widgets(ui))
    assert not missing, f"self.ui.<name> not in FOVCompletion.ui: {sorted(missing)}"
    assert {"applyButton", "progressBar", "statusLabel", "logTextEdit", "logCollapsibleButton"} <= set(
        ui_widgets(ui)
    )


def test_mrml_widgets_receive_the_scene(ui):
    root_name = ui.find("widget").get("name")
    receivers = {
        c.findtext("receiver")
        for c in ui.iter("connection")
        if c.findtext("sender") == root_name
        and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    mrml_widgets = {
        name for name, cls in ui_widgets(ui).items() if cls.startswith("qMRML") and name != root_name
    }
    assert mrml_widgets and mrml_widgets <= receivers
    declared = {c.findtext("class") for c in ui.iter("customwidget")}
    custom = {cls for cls in ui_widgets(ui).values() if cls.startswith(("qMRML", "ctk"))}
    assert custom <= declared, f"custom widgets not declared in the .ui: {custom - declared}"


def test_files_the_module_loads_exist(tree):
    text = SOURCE.read_text(encoding="utf-8")
    for resource in re.findall(r'resourcePath\("([^"]+)"\)', text):
        assert (MODULE / "Resources" / resource).is_file(), resource
    assert (MODULE / "Resources" / "Icons" / "FOVCompletion.png").is_file()  # module icon, sample thumbnail


def test_module_classes_follow_slicer_naming(tree):
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    expected_bases = {
        "FOVCompletion": "ScriptedLoadableModule",
        "FOVCompletionWidget": "ScriptedLoadableModuleWidget",
        "FOVCompletionLogic": "ScriptedLoadableModuleLogic",
        "FOVCompletionTest": "ScriptedLoadableModuleTest",
    }
    for name, base in expected_bases.items():
        assert base in [ast.unparse(b) for b in classes[name].bases], name
    complete = next(f for f in classes["FOVCompletionLogic"].body if getattr(f, "name", "") == "complete")
    arguments = [a.arg for a in complete.args.args + complete.args.kwonlyargs]
    for argument in ("inputNode", "slices", "steps", "extendSuperiorMm", "extendInferiorMm", "seed", "samples",
                     "device", "model", "waitForCompletion"):  # fmt: skip
        assert argument in arguments, argument
    tests = [f.name for f in classes["FOVCompletionTest"].body if getattr(f, "name", "").startswith("test_")]
    assert "test_FOVCompletion_phantom" in tests
