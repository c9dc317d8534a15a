"""Just enough CloudFormation to read template.yaml in tests: the short-form tags, parameters,
conditions and the intrinsic functions the template uses, resolved against stand-in physical
resources (the ones a test created on moto). Anything it does not know fails loudly."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
PARTITION = "aws"


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _tag)


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".json":
        return dict(json.loads(text))
    return dict(yaml.load(text, Loader=_Loader))


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


@dataclass
class Physical:
    """What a resource resolves to: Ref and its attributes."""

    ref: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    template: dict[str, Any]
    params: dict[str, Any]
    physical: dict[str, Physical] = field(default_factory=dict)
    stack_name: str = "oomcheck-test"

    def __post_init__(self) -> None:
        declared = self.template.get("Parameters", {})
        unknown = set(self.params) - set(declared)
        assert not unknown, f"not parameters of the template: {sorted(unknown)}"
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            raw = self.params.get(name, spec.get("Default"))
            assert raw is not None, f"parameter {name} has no default: the test must give it"
            if spec["Type"] == "CommaDelimitedList":
                values[name] = raw if isinstance(raw, list) else str(raw).split(",")
            else:
                values[name] = str(raw)
        self.values = values
        self._conditions: dict[str, bool] = {}

    # ------------------------------------------------------------------ conditions

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = self._truth(self.template["Conditions"][name])
        return self._conditions[name]

    def _truth(self, node: Any) -> bool:
        ((fn, arg),) = node.items()
        if fn == "Fn::Equals":
            left, right = (self.resolve(a) for a in arg)
            return bool(_scalar(left) == _scalar(right))
        if fn == "Fn::Not":
            return not self._truth(arg[0])
        if fn == "Fn::And":
            return all(self._truth(a) for a in arg)
        if fn == "Fn::Or":
            return any(self._truth(a) for a in arg)
        if fn == "Condition":
            return self.condition(arg)
        raise AssertionError(f"condition function {fn} not supported")

    def resource_on(self, logical: str) -> bool:
        cond = self.template["Resources"][logical].get("Condition")
        return cond is None or self.condition(cond)

    # ------------------------------------------------------------------ intrinsics

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(n) for n in node]
            return [n for n in items if n is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self._ref(arg)
            if key.startswith("Fn::") or key == "Condition":
                return self._fn(key, arg)
        out = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def _pseudo(self, name: str) -> str | None:
        return {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::StackName": self.stack_name,
            "AWS::URLSuffix": "amazonaws.com",
        }.get(name)

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        pseudo = self._pseudo(name)
        if pseudo is not None:
            return pseudo
        if name in self.values:
            return self.values[name]
        if name in self.physical:
            return self.physical[name].ref
        raise AssertionError(f"Ref {name}: no parameter or stand-in resource")

    def _getatt(self, logical: str, attr: str) -> str:
        assert logical in self.physical, f"GetAtt {logical}.{attr}: no stand-in resource"
        attrs = self.physical[logical].attrs
        assert attr in attrs, f"GetAtt {logical}.{attr}: the stand-in has no such attribute"
        return attrs[attr]

    def _sub(self, text: str, extra: Mapping[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in extra:
                return str(_scalar(extra[name]))
            if "." in name and name.split(".", 1)[0] in self.physical:
                logical, attr = name.split(".", 1)
                return self._getatt(logical, attr)
            return str(_scalar(self._ref(name)))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def _fn(self, fn: str, arg: Any) -> Any:
        if fn == "Fn::GetAtt":
            logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
            return self._getatt(logical, attr)
        if fn == "Fn::Sub":
            if isinstance(arg, str):
                return self._sub(arg, {})
            text, variables = arg
            return self._sub(text, {k: self.resolve(v) for k, v in variables.items()})
        if fn == "Fn::Join":
            sep, items = arg
            resolved = self.resolve(items)
            assert isinstance(resolved, list)
            return sep.join(str(_scalar(i)) for i in _flatten(resolved))
        if fn == "Fn::Split":
            sep, text = arg
            return str(self.resolve(text)).split(sep)
        if fn == "Fn::If":
            name, yes, no = arg
            return self.resolve(yes if self.condition(name) else no)
        if fn == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if fn == "Fn::FindInMap":
            table, key, attr = (str(_scalar(self.resolve(a))) for a in arg)
            return self.template["Mappings"][table][key][attr]
        if fn == "Condition":
            return self.condition(arg)
        raise AssertionError(f"intrinsic {fn} not supported by tests/template/cfn.py")

    def properties(self, logical: str, *only: str) -> dict[str, Any]:
        """A resource's properties, resolved; ``only`` limits them to those named (the others
        may refer to resources the test has no stand-in for)."""
        props = self.template["Resources"][logical].get("Properties", {})
        if only:
            props = {k: v for k, v in props.items() if k in only}
        resolved = self.resolve(props)
        assert isinstance(resolved, dict)
        return resolved


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


def _flatten(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, list):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def function_logical_id(template: Mapping[str, Any]) -> str:
    [name] = [
        k
        for k, r in template["Resources"].items()
        if r["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")
    ]
    return str(name)
