// Define-by-run autograd: graph nodes, the grad-mode switch, and the backward walk.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string_view>
#include <vector>

#include "engine/tensor.h"

namespace retort {

// Where one input's gradient goes: into another node, into a leaf's .grad, or nowhere.
struct Edge {
  std::shared_ptr<Node> node;         // the input was produced by an op that needs its gradient
  std::shared_ptr<TensorImpl> leaf;   // the input is a leaf that requires grad
  bool active() const { return node || leaf; }
};

// One recorded op. A node saves only what its backward formula needs and drops it in
// release_saved(), which the walk calls right after the node ran (unless retain_graph).
class Node {
 public:
  Node();
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  virtual std::string_view name() const = 0;
  // Gradients with respect to each input, in the order of next_edges; an entry may be left
  // undefined when its edge is inactive. grad_output has the output's shape, dtype and device.
  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  virtual void release_saved() {}

  std::vector<Edge> next_edges;
  uint64_t sequence = 0;  // creation order: later nodes run first when several are ready
  bool released = false;
};

// True while ops record nodes (the default); NoGradGuard turns it off in its scope, per thread.
bool grad_mode_enabled();

class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any of the inputs requires grad: the op must record a node.
bool needs_grad(std::initializer_list<const Tensor*> inputs);

// Connects `node` to `inputs` (one edge each, in order) and makes it the grad_fn of `output`.
void attach_node(const Tensor& output, std::shared_ptr<Node> node,
                 std::initializer_list<const Tensor*> inputs);

// The backward walk behind Tensor::backward.
void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph);

}  // namespace retort
