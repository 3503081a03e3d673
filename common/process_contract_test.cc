// The process contract's names, spelled out here on purpose: a change to
// one is a change to what every job's processes see, and must show here.
#include "common/process_contract.h"

#include <gtest/gtest.h>

namespace dcvlr::contract {
namespace {

TEST(ProcessContractTest, TorchrunAndDcvlrVariablesAreTheContracts) {
  for (const char* name :
       {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK",
        "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES",
        "DCVLR_JOB_ID", "DCVLR_CHECKPOINT_DIR", "DCVLR_ANYTHING"}) {
    EXPECT_TRUE(IsContractVariable(name)) << name;
  }
  for (const char* name : {"PATH", "HF_HOME", "RANKS", "DCVLR", "dcvlr_x",
                           "OPENBLAS_CORETYPE", ""}) {
    EXPECT_FALSE(IsContractVariable(name)) << name;
  }
}

TEST(ProcessContractTest, ExitCodes) {
  EXPECT_EQ(kExitOk, 0);
  EXPECT_EQ(kExitRequeue, 75);  // EX_TEMPFAIL, as sysexits.h has it
  EXPECT_NE(kExitError, kExitOk);
  EXPECT_NE(kExitBadConfig, kExitRequeue);
}

TEST(ProcessContractTest, NativeModels) {
  EXPECT_TRUE(IsNativeModel("tiny-vlm"));
  EXPECT_TRUE(IsNativeModel("qwen2-vl-2b"));
  EXPECT_FALSE(IsNativeModel("Qwen/Qwen2.5-VL-7B-Instruct"));
  EXPECT_FALSE(IsNativeModel(""));
}

}  // namespace
}  // namespace dcvlr::contract
