// Registers the resample2d operators as torch.ops.davss.* (importing lib.ops._resample2d_cuda runs this).
#include <Python.h>
#include <torch/library.h>

#include "resample2d.h"

extern "C" {
// No Python attributes: the operators are reached through torch.ops.davss (visible to torch.compile).
PyObject* PyInit__resample2d_cuda(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_resample2d_cuda", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(davss, m) {
  m.def("resample2d_forward(Tensor input, Tensor flow) -> Tensor");
  m.def("resample2d_backward(Tensor grad_output, Tensor input, Tensor flow, bool need_input_grad, "
        "bool need_flow_grad, bool deterministic=False) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(davss, CUDA, m) {
  m.impl("resample2d_forward", &davss::resample2d_forward_cuda);
  m.impl("resample2d_backward", &davss::resample2d_backward_cuda);
}
