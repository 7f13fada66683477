// emu_module.cpp -- the Python face of the CPU emulation (pybind11).
//
//   launch(name, grid, block, shared_mem, args)   grid/block: 3-tuples of ints;
//       args: one Python int per pointer (its address) and a Python int or
//       float per scalar, already checked by convnet/kernels.py (checked here
//       again: a wrong value is a TypeError/ValueError, never a crash).
//   kernels() -> {name: [parameter type, ...]}
//   kernel_files() -> {name: source file}
//   threads() / set_threads(n), order() / set_order(s), settings() -> dict
//
// The same object file serves two extensions: convnet._emu (kernels/*.cu) and
// convnet._emu_test (tests/emu_kernels/*.cu); each is linked with its own
// generated registry, and Python finds the PyInit_ function of its file name.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "emu_runtime.h"

namespace py = pybind11;

namespace {

const cn_emu_kernel_entry& find_kernel(const std::string& name) {
    for (int i = 0; i < cn_emu_registry_size; i++)
        if (name == cn_emu_registry[i].name) return cn_emu_registry[i];
    throw py::value_error("unknown kernel '" + name + "': not in the emulation's kernel registry (rebuild with make?)");
}

dim3 to_dim3(const py::handle& t, const char* what, const char* kernel) {
    auto seq = py::reinterpret_borrow<py::sequence>(t);
    if (!py::isinstance<py::tuple>(t) || py::len(seq) != 3)
        throw py::type_error(std::string("kernel ") + kernel + ": " + what + " must be a 3-tuple of ints");
    unsigned v[3];
    for (int i = 0; i < 3; i++) {
        py::handle e = seq[i];
        if (!py::isinstance<py::int_>(e))
            throw py::type_error(std::string("kernel ") + kernel + ": " + what + " must be a 3-tuple of ints");
        long long x = e.cast<long long>();
        if (x < 1 || x > 0x7fffffffLL)
            throw py::value_error(std::string("kernel ") + kernel + ": " + what + " dimensions must be in [1, 2^31-1], got " +
                                  std::to_string(x));
        v[i] = (unsigned)x;
    }
    return dim3(v[0], v[1], v[2]);
}

// Writes parameter i's value into slot (8 bytes, aligned).
void convert_arg(const cn_emu_kernel_entry& k, int i, const py::handle& a, uint64_t* slot) {
    std::string type = k.params[i];
    auto fail_type = [&](const char* expected) {
        throw py::type_error("kernel " + std::string(k.name) + ": parameter " + std::to_string(i) + " (" + type +
                             ") expects " + expected + ", got " + std::string(py::str(py::type::of(a).attr("__name__"))));
    };
    auto fail_range = [&](const std::string& v) {
        throw py::value_error("kernel " + std::string(k.name) + ": parameter " + std::to_string(i) + " (" + type +
                              ") out of range: " + v);
    };
    *slot = 0;
    if (type.back() == '*') {   // a pointer: an address
        if (!py::isinstance<py::int_>(a) || py::isinstance<py::bool_>(a)) fail_type("an int address");
        unsigned long long p = a.cast<unsigned long long>();
        void* ptr = (void*)(uintptr_t)p;
        std::memcpy(slot, &ptr, sizeof ptr);
        return;
    }
    if (type == "float") {
        if (!py::isinstance<py::float_>(a) && !py::isinstance<py::int_>(a)) fail_type("a number");
        float f = (float)a.cast<double>();
        std::memcpy(slot, &f, sizeof f);
        return;
    }
    if (!py::isinstance<py::int_>(a) || py::isinstance<py::bool_>(a)) fail_type("an int");
    py::int_ n = py::reinterpret_borrow<py::int_>(a);
    if (type == "unsigned long long") {
        unsigned long long v = PyLong_AsUnsignedLongLong(n.ptr());
        if (PyErr_Occurred()) { PyErr_Clear(); fail_range(py::str(a)); }
        std::memcpy(slot, &v, sizeof v);
        return;
    }
    long long v = PyLong_AsLongLong(n.ptr());
    if (PyErr_Occurred()) { PyErr_Clear(); fail_range(py::str(a)); }
    if (type == "int") {
        if (v < INT32_MIN || v > INT32_MAX) fail_range(std::to_string(v));
        int32_t x = (int32_t)v;
        std::memcpy(slot, &x, sizeof x);
    } else if (type == "unsigned int") {
        if (v < 0 || v > (long long)UINT32_MAX) fail_range(std::to_string(v));
        uint32_t x = (uint32_t)v;
        std::memcpy(slot, &x, sizeof x);
    } else if (type == "unsigned char") {
        if (v < 0 || v > 255) fail_range(std::to_string(v));
        unsigned char x = (unsigned char)v;
        std::memcpy(slot, &x, sizeof x);
    } else {
        throw py::type_error("kernel " + std::string(k.name) + ": parameter " + std::to_string(i) + " has unsupported type " + type);
    }
}

void launch(const std::string& name, py::object grid, py::object block, long long shared_mem, py::sequence args) {
    const cn_emu_kernel_entry& k = find_kernel(name);
    dim3 g = to_dim3(grid, "grid", k.name), b = to_dim3(block, "block", k.name);
    if (shared_mem < 0) throw py::value_error("kernel " + name + ": shared_mem must be >= 0, got " + std::to_string(shared_mem));
    if ((int)py::len(args) != k.nparams)
        throw py::type_error("kernel " + name + " takes " + std::to_string(k.nparams) + " arguments, got " +
                             std::to_string(py::len(args)));
    std::vector<uint64_t> slots(k.nparams ? k.nparams : 1);
    std::vector<void*> ptrs(k.nparams ? k.nparams : 1);
    for (int i = 0; i < k.nparams; i++) {
        convert_arg(k, i, args[i], &slots[i]);
        ptrs[i] = &slots[i];
    }
    py::gil_scoped_release nogil;
    cn_emu::launch(k, g, b, (size_t)shared_mem, ptrs.data());   // std::runtime_error -> RuntimeError
}

void bind(py::module_& m) {
    m.doc() = "CUDA kernels of convnet run on the CPU emulation (see bindings/cuda_emu.h)";
    m.def("launch", &launch, py::arg("name"), py::arg("grid"), py::arg("block"), py::arg("shared_mem"), py::arg("args"),
          "Runs kernel `name` over grid x block threads; blocks until done.");
    m.def("kernels", [] {
        std::map<std::string, std::vector<std::string>> out;
        for (int i = 0; i < cn_emu_registry_size; i++) {
            const cn_emu_kernel_entry& k = cn_emu_registry[i];
            out[k.name] = std::vector<std::string>(k.params, k.params + k.nparams);
        }
        return out;
    });
    m.def("kernel_files", [] {
        std::map<std::string, std::string> out;
        for (int i = 0; i < cn_emu_registry_size; i++) out[cn_emu_registry[i].name] = cn_emu_registry[i].file;
        return out;
    });
    m.def("threads", &cn_emu::threads, "OS threads a launch may use");
    m.def("set_threads", &cn_emu::set_threads, py::arg("n"));
    m.def("order", &cn_emu::order, "order in which a block's threads run between barriers");
    m.def("set_order", &cn_emu::set_order, py::arg("order"));
    m.def("settings", [] {
        py::dict d;
        d["threads"] = cn_emu::threads();
        d["order"] = cn_emu::order();
        d["stack_bytes"] = cn_emu::stack_bytes();
        d["max_dynamic_shared_mem"] = (size_t)CN_EMU_MAX_DYNAMIC_SMEM;
        d["context_switch"] = cn_emu::context_switch();
#if defined(__SANITIZE_ADDRESS__)
        d["asan"] = true;
#else
        d["asan"] = false;
#endif
        return d;
    });
}

}  // namespace

PYBIND11_MODULE(_emu, m) { bind(m); }
PYBIND11_MODULE(_emu_test, m) { bind(m); }
