// Tensor handles, views, copies, random fills and the errors bad arguments get.
#include <gtest/gtest.h>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/rng.h"

namespace retort {
namespace {

// Runs fn and returns the exception message (empty when nothing was thrown).
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Tensor, CreationAndMetadata) {
  Tensor t = Tensor::full({2, 3}, 1.5);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(6, 1.5f));
  EXPECT_EQ(t.size(-1), 3);
  EXPECT_EQ(t.str(), "Tensor[2, 3] f32 cpu");
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, CopiesShareStorage) {
  Tensor a = Tensor::zeros({4});
  Tensor b = a;
  b.fill_(2.0);
  EXPECT_EQ(a.to_vector<float>(), std::vector<float>(4, 2.0f));
}

TEST(Tensor, NarrowIsAViewOfTheLeadingChannels) {
  // (out=4, in=3, 1, 2) weight; a slimmable layer takes the first 2 output and 2 input channels.
  std::vector<float> values(24);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  Tensor w = Tensor::from_vector(values, {4, 3, 1, 2});
  Tensor slice = w.narrow(0, 0, 2).narrow(1, 0, 2);
  EXPECT_EQ(slice.shape(), (Shape{2, 2, 1, 2}));
  EXPECT_EQ(slice.storage(), w.storage());
  EXPECT_FALSE(slice.is_contiguous());
  EXPECT_EQ(slice.to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 6, 7, 8, 9}));
  // Writing through the view changes the base: slimmable weights are shared, not copied.
  slice.fill_(-1.0);
  EXPECT_EQ(w.to_vector<float>()[7], -1.0f);
  EXPECT_EQ(w.to_vector<float>()[4], 4.0f);
}

TEST(Tensor, TransposeReshapeAndContiguous) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = a.transpose(0, 1);
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), a.storage());
  EXPECT_EQ(t.reshape({6}).to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(a.reshape({3, -1}).shape(), (Shape{3, 2}));
  EXPECT_EQ(a.reshape({3, -1}).storage(), a.storage());
  Tensor x = Tensor::zeros({2, 3, 4, 5});
  EXPECT_EQ(x.flatten(1).shape(), (Shape{2, 60}));
  EXPECT_EQ(x.flatten(1, 2).shape(), (Shape{2, 12, 5}));
}

TEST(Tensor, CopyConvertsDtypeAndWritesIntoViews) {
  Tensor d = Tensor::from_vector<double>({0.5, 1.5, 2.5, 3.5}, {2, 2});
  Tensor f = d.to(DType::f32);
  EXPECT_EQ(f.dtype(), DType::f32);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{0.5f, 1.5f, 2.5f, 3.5f}));
  Tensor base = Tensor::zeros({2, 3});
  base.narrow(1, 1, 2).copy_(f);
  EXPECT_EQ(base.to_vector<float>(), (std::vector<float>{0, 0.5f, 1.5f, 0, 2.5f, 3.5f}));
  Tensor labels = Tensor::from_vector<int64_t>({3, 1}, {2});
  EXPECT_EQ(labels.to(DType::f64).to_vector<double>(), (std::vector<double>{3.0, 1.0}));
}

TEST(Tensor, RandomFillsAreSeededAndAdvanceTheGenerator) {
  Generator g1(7), g2(7);
  Tensor a = Tensor::rand({1000}, g1);
  Tensor b = Tensor::rand({1000}, g2);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_EQ(g1.offset(), 250u);
  Tensor c = Tensor::rand({1000}, g1);
  EXPECT_NE(a.to_vector<float>(), c.to_vector<float>());
  for (float v : a.to_vector<float>()) {
    EXPECT_GT(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }
  // A larger fill starting at the same offset begins with the same numbers.
  Generator g3(7);
  Tensor longer = Tensor::randn({2000}, g3, 0.0, 1.0, DType::f64);
  Generator g4(7);
  Tensor shorter = Tensor::randn({8}, g4, 0.0, 1.0, DType::f64);
  const auto l = longer.to_vector<double>(), s = shorter.to_vector<double>();
  EXPECT_TRUE(std::equal(s.begin(), s.end(), l.begin()));
}

TEST(TensorErrors, ShapeMismatchNamesTheOpAndBothShapes) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 3});
  const std::string message = error_of([&] { add(a, b); });
  EXPECT_NE(message.find("add"), std::string::npos) << message;
  EXPECT_NE(message.find("[2, 3]"), std::string::npos) << message;
  EXPECT_NE(message.find("[4, 3]"), std::string::npos) << message;

  const std::string mm = error_of([&] { matmul(a, b); });
  EXPECT_NE(mm.find("matmul"), std::string::npos) << mm;
  EXPECT_NE(mm.find("[2, 3]"), std::string::npos) << mm;

  const std::string conv = error_of([&] {
    conv2d(Tensor::zeros({1, 3, 8, 8}), Tensor::zeros({4, 2, 3, 3}));
  });
  EXPECT_NE(conv.find("conv2d"), std::string::npos) << conv;
  EXPECT_NE(conv.find("[1, 3, 8, 8]"), std::string::npos) << conv;
  EXPECT_NE(conv.find("[4, 2, 3, 3]"), std::string::npos) << conv;
}

TEST(TensorErrors, DtypeAndDeviceMismatchSayWhich) {
  Tensor f = Tensor::zeros({3}), d = Tensor::zeros({3}, DType::f64);
  const std::string message = error_of([&] { mul(f, d); });
  EXPECT_NE(message.find("mul"), std::string::npos) << message;
  EXPECT_NE(message.find("f32"), std::string::npos) << message;
  EXPECT_NE(message.find("f64"), std::string::npos) << message;

  Tensor labels = Tensor::zeros({3}, DType::i64);
  const std::string relu_message = error_of([&] { relu(labels); });
  EXPECT_NE(relu_message.find("relu"), std::string::npos) << relu_message;
  EXPECT_NE(relu_message.find("i64"), std::string::npos) << relu_message;

  const std::string label_message = error_of([&] {
    cross_entropy(Tensor::zeros({2, 3}), Tensor::from_vector<int64_t>({0, 3}, {2}));
  });
  EXPECT_NE(label_message.find("label 3"), std::string::npos) << label_message;
}

TEST(TensorErrors, CudaRequestsFailClearlyWithoutADevice) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  const std::string message = error_of([] { Tensor::zeros({2}, DType::f32, Device::cuda()); });
  EXPECT_NE(message.find("cuda:0"), std::string::npos) << message;
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_NE(error_of([] { Device::parse("gpu"); }).find("gpu"), std::string::npos);
}

TEST(Dispatch, AnswersWhatIsSupported) {
  for (const OpInfo& info : kOpTable) {
    EXPECT_TRUE(info.cpu) << info.name << " must have a CPU twin";
  }
  EXPECT_TRUE(supports(OpId::conv2d, Device::cpu()));
  if (!cuda_compiled()) {
    EXPECT_FALSE(supports(OpId::conv2d, Device::cuda()));
  }
}

}  // namespace
}  // namespace retort
