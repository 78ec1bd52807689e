// Every numeric tolerance of the test suite, in one place; a looser one carries its reason.
#pragma once

namespace retort::test {

// Finite-difference gradient checks in float64 on the CPU (central differences).
inline constexpr double kGradcheckStep = 1e-6;
inline constexpr double kGradcheckAbs = 1e-6;
inline constexpr double kGradcheckRel = 1e-5;

// A kernel against a naive reference loop in the same dtype: only summation order differs.
inline constexpr double kReferenceF64Rel = 1e-12;
// Absolute floor for f64 results that cancel to near zero, where a relative bound means nothing.
inline constexpr double kReferenceF64Abs = 1e-12;
inline constexpr double kReferenceF32Rel = 1e-5;
inline constexpr double kReferenceF32Abs = 1e-5;

// Golden values computed by PyTorch in float64: our float64 path matches to rounding...
inline constexpr double kGoldenF64Rel = 1e-10;
inline constexpr double kGoldenF64Abs = 1e-10;
// ...and our float32 path to float32 precision over the summation lengths of the fixtures.
inline constexpr double kGoldenF32Rel = 1e-4;
inline constexpr double kGoldenF32Abs = 1e-4;

// CPU float32 vs CUDA float32 (TF32 off): summation order and fused multiply-adds differ.
inline constexpr double kParityF32Rel = 1e-4;
inline constexpr double kParityF32Abs = 1e-5;

// Path equivalence in float64 (a folded or fused path against the plain one, e.g. BN folding in
// nn/fold.h): only the per-layer rounding of the rewritten weights and biases differs.
inline constexpr double kPathF64Rel = 1e-10;
inline constexpr double kPathF64Abs = 1e-10;

}  // namespace retort::test
