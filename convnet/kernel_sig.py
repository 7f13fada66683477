"""Kernel signatures parsed from CUDA source: the one parser behind the loader
(convnet/kernels.py) and the emulation's launch registry (bindings/gen_registry.py).

    sigs = parse_file("kernels/lrn.cu")
    sigs[0].name, [p.ctype for p in sigs[0].params]   # 'lrn_fwd', ['const float*', 'float*', 'int', ...]

A kernel is `extern "C" __global__ void NAME(PARAMS)` (docs/design.md);
`__launch_bounds__(...)` may stand anywhere between `extern "C"` and the name.
Parameters are pointers to float, int, unsigned int, unsigned char or
unsigned long long (const and __restrict__ allowed) or scalars of those
types; anything else raises KernelSignatureError naming the file, line,
kernel and parameter.
"""
import os
import re
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

# C base type -> NumPy dtype
BASE_TYPES = {
    "float": np.dtype(np.float32),
    "int": np.dtype(np.int32),
    "unsigned int": np.dtype(np.uint32),
    "unsigned char": np.dtype(np.uint8),
    "unsigned long long": np.dtype(np.uint64),
}
# spellings accepted for the base types
_ALIASES = {
    "float": "float",
    "int": "int", "signed int": "int", "signed": "int",
    "unsigned": "unsigned int", "unsigned int": "unsigned int",
    "unsigned char": "unsigned char",
    "unsigned long long": "unsigned long long", "unsigned long long int": "unsigned long long",
}


class KernelSignatureError(ValueError):
    pass


@dataclass(frozen=True)
class Param:
    name: str          # may be "" when the source leaves it out
    base: str          # one of BASE_TYPES
    pointer: bool
    const: bool        # pointer to const (the kernel does not write through it)

    @property
    def ctype(self):
        """The normalized C type: 'const float*', 'float*', 'int', ..."""
        if self.pointer:
            return ("const " if self.const else "") + self.base + "*"
        return self.base

    @property
    def dtype(self):
        return BASE_TYPES[self.base]


@dataclass(frozen=True)
class KernelSig:
    name: str
    params: Tuple[Param, ...]
    file: str
    line: int


def strip_comments(text):
    """Comments and preprocessor lines become spaces; newlines and string literals stay."""
    out = []
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#":
            # a preprocessor directive, with its continuation lines
            j = i
            while j < n and text[j] != "\n":
                if text[j] == "\\" and j + 1 < n and text[j + 1] == "\n":
                    out.append(" ")
                    out.append("\n")
                    j += 2
                    continue
                out.append(" ")
                j += 1
            i = j
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
            at_line_start = False
            continue
        out.append(c)
        if c == "\n":
            at_line_start = True
        elif not c.isspace():
            at_line_start = False
        i += 1
    return "".join(out)


_LAUNCH_BOUNDS = r"__launch_bounds__\s*\([^()]*\)"
_KERNEL_RE = re.compile(
    r'extern\s+"C"\s+((?:(?:__global__|__host__|static|inline|__noinline__|' + _LAUNCH_BOUNDS + r')\s*)+)'
    r'void\s+(?:' + _LAUNCH_BOUNDS + r'\s*)?([A-Za-z_]\w*)\s*\(([^()]*)\)\s*([;{])')


def _parse_param(text, kernel, index, where):
    toks = re.findall(r"[A-Za-z_]\w*|\*|&|\[|\]|\S", text)
    if "&" in toks or "[" in toks:
        raise KernelSignatureError(f"{where}: kernel {kernel}: parameter {index} '{text.strip()}': "
                                   "references and arrays are not allowed (docs/design.md)")
    stars = toks.count("*")
    if stars > 1:
        raise KernelSignatureError(f"{where}: kernel {kernel}: parameter {index} '{text.strip()}': "
                                   "pointers to pointers are not allowed")
    star_at = toks.index("*") if stars else len(toks)
    before, after = toks[:star_at], toks[star_at + 1:]
    ignore = {"__restrict__", "__restrict", "volatile"}
    const = "const" in before
    before = [t for t in before if t not in ignore and t != "const"]
    after = [t for t in after if t not in ignore and t != "const"]
    name = ""
    if stars:
        if len(after) > 1:
            raise KernelSignatureError(f"{where}: kernel {kernel}: parameter {index} '{text.strip()}': cannot parse")
        name = after[0] if after else ""
        words = before
    else:
        # scalar: the last word is the name unless it is part of the type
        words = before
        if words and words[-1] not in ("float", "int", "unsigned", "char", "long", "signed"):
            name = words.pop()
    base = _ALIASES.get(" ".join(words))
    if base is None:
        allowed = ", ".join(BASE_TYPES)
        raise KernelSignatureError(
            f"{where}: kernel {kernel}: parameter {index}{' ' + repr(name) if name else ''} has type "
            f"'{' '.join(t for t in toks if t != name).strip()}'; allowed: pointers to or scalars of {allowed}")
    return Param(name=name, base=base, pointer=bool(stars), const=const and bool(stars))


def parse_source(text, filename="<source>") -> List[KernelSig]:
    """Every `extern "C" __global__` kernel defined in the text, in source order."""
    clean = strip_comments(text)
    found = {}
    order = []
    for m in _KERNEL_RE.finditer(clean):
        quals = m.group(1)
        if "__global__" not in quals:
            continue
        name, params_text, end = m.group(2), m.group(3), m.group(4)
        line = clean.count("\n", 0, m.start()) + 1
        where = f"{filename}:{line}"
        plist = params_text.strip()
        params = []
        if plist and plist != "void":
            for i, p in enumerate(plist.split(",")):
                if not p.strip():
                    raise KernelSignatureError(f"{where}: kernel {name}: empty parameter {i}")
                params.append(_parse_param(p, name, i, where))
        sig = KernelSig(name=name, params=tuple(params), file=filename, line=line)
        if name in found:
            prev = found[name]
            if [p.ctype for p in prev.params] != [p.ctype for p in sig.params]:
                raise KernelSignatureError(f"{where}: kernel {name} declared with different parameters "
                                           f"at {prev.file}:{prev.line}")
            if end == "{":
                found[name] = sig   # prefer the definition's line
            continue
        found[name] = sig
        order.append(name)
    return [found[n] for n in order]


def parse_file(path, display=None) -> List[KernelSig]:
    with open(path, encoding="utf-8") as f:
        return parse_source(f.read(), display or path)


def parse_dir(directory, display_prefix=None) -> List[KernelSig]:
    """Every kernel of every *.cu file in the directory (sorted by file name);
    a name defined in two files raises KernelSignatureError."""
    sigs, seen = [], {}
    if not os.path.isdir(directory):
        return sigs
    for fn in sorted(os.listdir(directory)):
        if not fn.endswith(".cu"):
            continue
        shown = os.path.join(display_prefix, fn) if display_prefix else os.path.join(directory, fn)
        for s in parse_file(os.path.join(directory, fn), shown):
            if s.name in seen:
                raise KernelSignatureError(f"{s.file}:{s.line}: kernel {s.name} is also defined at {seen[s.name]}")
            seen[s.name] = f"{s.file}:{s.line}"
            sigs.append(s)
    return sigs
