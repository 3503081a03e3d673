// The coordinator serves the standard gRPC health service and server
// reflection, so that grpc_health_probe, grpcurl and load balancers work. No
// generated code for those protos ships with Debian's gRPC, so this test
// speaks them through the generic stub with hand-encoded messages.
#include <future>

#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace dcvlr::testing {
namespace {

std::unique_ptr<grpc::ByteBuffer> Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return std::make_unique<grpc::ByteBuffer>(&slice, 1);
}

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  buffer.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

TEST(GrpcServicesTest, HealthCheckSaysServing) {
  Cluster cluster;
  cluster.StartCoordinator();
  auto channel = cluster.TlsChannel("");
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  // HealthCheckRequest{service: ""} encodes as no bytes.
  auto request = Buffer("");
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 request.get(), &response,
                 [&](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  // HealthCheckResponse{status: SERVING (1)}: field 1, varint 1.
  EXPECT_EQ(Bytes(response), std::string("\x08\x01", 2));
}

TEST(GrpcServicesTest, ReflectionListsTheDcvlrServices) {
  Cluster cluster;
  cluster.StartCoordinator();
  auto channel = cluster.TlsChannel("");
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  auto call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto next = [&cq](intptr_t want) {
    void* tag;
    bool ok;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(next(1));
  // ServerReflectionRequest{list_services: ""}: field 7, length-delimited.
  call->Write(*Buffer(std::string("\x3a\x00", 2)), reinterpret_cast<void*>(2));
  ASSERT_TRUE(next(2));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  ASSERT_TRUE(next(3));
  call->WritesDone(reinterpret_cast<void*>(4));
  next(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  next(5);
  const std::string bytes = Bytes(response);
  EXPECT_THAT(bytes, ::testing::HasSubstr("dcvlr.v1.ClientService"));
  EXPECT_THAT(bytes, ::testing::HasSubstr("dcvlr.v1.AgentService"));
  EXPECT_THAT(bytes, ::testing::HasSubstr("grpc.health.v1.Health"));
}

}  // namespace
}  // namespace dcvlr::testing
