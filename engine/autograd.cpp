// The backward walk: topological order over recorded nodes, gradient routing and accumulation.
#include "engine/autograd.h"

#include <atomic>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/elementwise.h"

namespace retort {
namespace {

thread_local bool grad_mode = true;
std::atomic<uint64_t> next_sequence{0};

// Adds g into the leaf's .grad: the first contribution is copied into a buffer the leaf owns
// (g may alias other tensors), later ones are accumulated in place.
void accumulate_into_leaf(TensorImpl& leaf, const Tensor& g) {
  if (g.shape() != leaf.shape) {
    throw std::logic_error("autograd: gradient of shape " + shape_str(g.shape()) +
                           " reached a leaf of shape " + shape_str(leaf.shape));
  }
  if (!leaf.grad.defined()) {
    leaf.grad = g.clone();
    return;
  }
  Tensor src = g.contiguous();
  Tensor& dst = leaf.grad;
  dispatch<OpId::add>(dst.device(), dst.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::accumulate(ctx, dst.numel(), src.data<T>(), dst.data<T>());
  });
}

}  // namespace

Node::Node() : sequence(next_sequence.fetch_add(1)) {}

bool grad_mode_enabled() { return grad_mode; }

NoGradGuard::NoGradGuard() : previous_(grad_mode) { grad_mode = false; }
NoGradGuard::~NoGradGuard() { grad_mode = previous_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_mode) return false;
  for (const Tensor* t : inputs) {
    if (t != nullptr && t->defined() && t->requires_grad()) return true;
  }
  return false;
}

void attach_node(const Tensor& output, std::shared_ptr<Node> node,
                 std::initializer_list<const Tensor*> inputs) {
  node->next_edges.reserve(inputs.size());
  for (const Tensor* t : inputs) {
    Edge edge;
    if (t != nullptr && t->defined() && t->requires_grad()) {
      if (t->grad_fn()) {
        edge.node = t->grad_fn();
      } else {
        edge.leaf = t->impl_ptr();
      }
    }
    node->next_edges.push_back(std::move(edge));
  }
  output.impl()->requires_grad = true;
  output.impl()->grad_fn = std::move(node);
}

void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  check_defined(root, "backward", "self");
  if (!root.requires_grad()) {
    throw std::invalid_argument(
        "backward: the tensor does not require grad (no input of its computation requires grad, "
        "or it was computed under NoGradGuard)");
  }
  Tensor seed = grad;
  if (!seed.defined()) {
    if (root.numel() != 1) {
      throw std::invalid_argument("backward: an implicit gradient needs a single-element output; "
                                  "got shape " + shape_str(root.shape()) +
                                  " (pass the gradient explicitly)");
    }
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  } else if (seed.shape() != root.shape() || seed.dtype() != root.dtype() ||
             seed.device() != root.device()) {
    throw std::invalid_argument("backward: gradient " + seed.str() + " does not match output " +
                                root.str());
  }

  NoGradGuard no_grad;  // gradients are plain tensors: no higher-order graphs
  if (root.is_leaf()) {
    accumulate_into_leaf(*root.impl(), seed);
    return;
  }

  // Count, for every node reachable from the root, how many edges point at it.
  std::unordered_map<Node*, int> pending;
  std::vector<Node*> stack = {root.grad_fn().get()};
  std::unordered_set<Node*> seen = {stack.back()};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const Edge& e : node->next_edges) {
      if (!e.node) continue;
      ++pending[e.node.get()];
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  // Kahn's algorithm; among ready nodes the most recently created runs first.
  auto later_first = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence < b->sequence;
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>,
                      decltype(later_first)>
      ready(later_first);
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = seed;
  ready.push(root.grad_fn());

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    if (node->released) {
      throw std::logic_error(
          "backward: op '" + std::string(node->name()) +
          "' was already backpropagated and its saved tensors were released; pass "
          "retain_graph=true to the first backward to run it again");
    }
    auto it = grads.find(node.get());
    Tensor grad_output = it->second;
    grads.erase(it);
    std::vector<Tensor> input_grads = node->apply(grad_output);
    grad_output = Tensor();
    if (!retain_graph) {
      node->release_saved();
      node->released = true;
    }
    if (input_grads.size() != node->next_edges.size()) {
      throw std::logic_error("autograd: op '" + std::string(node->name()) + "' returned " +
                             std::to_string(input_grads.size()) + " gradients for " +
                             std::to_string(node->next_edges.size()) + " inputs");
    }
    for (size_t i = 0; i < input_grads.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.active()) continue;
      Tensor& g = input_grads[i];
      if (e.leaf) {
        if (g.defined()) accumulate_into_leaf(*e.leaf, g);
        continue;
      }
      if (g.defined()) {
        auto slot = grads.find(e.node.get());
        if (slot == grads.end()) {
          grads.emplace(e.node.get(), g);
        } else {
          slot->second = add(slot->second, g);  // out of place: g may alias other gradients
        }
      }
      if (--pending[e.node.get()] == 0) {
        if (grads.count(e.node.get()) != 0) {
          ready.push(e.node);
        } else {
          // No gradient reached this node (all contributions undefined): skip its subtree.
          std::vector<Node*> skip = {e.node.get()};
          while (!skip.empty()) {
            Node* n = skip.back();
            skip.pop_back();
            for (const Edge& next : n->next_edges) {
              if (next.node && --pending[next.node.get()] == 0) {
                if (grads.count(next.node.get()) != 0) {
                  ready.push(next.node);
                } else {
                  skip.push_back(next.node.get());
                }
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace retort
