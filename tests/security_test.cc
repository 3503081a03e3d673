// Identity and authority with the real binaries: a TLS cluster with its own
// CA and munged, test users made with useradd acting through runuser, and
// fake agents that speak the agent protocol with (or without) certificates.
// Each test is something a user or a rogue process could do before dcvlr
// authenticated its callers.
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/munge.h"
#include "dcvlr/v1/agent.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster.h"
#include "tests/http.h"

namespace dcvlr::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAlice[] = "dcvlr-alice";
constexpr char kBob[] = "dcvlr-bob";
constexpr char kCarol[] = "dcvlr-carol";  // an admin by the cluster config

constexpr char kSleeper[] =
    "name: train-a\n"
    "kind: command\n"
    "run: echo alice-was-here; sleep 600\n"
    "env: {WANDB_API_KEY: alice-secret-key}\n"
    "resources: {gpus_per_node: 1}\n";

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class SecureClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* user : {kAlice, kBob, kCarol}) {
      ASSERT_GE(EnsureUnixUser(user), 0);
    }
    cluster_.EnableSecurity({"n1", "n2"});
    const std::string config =
        cluster_.WriteFile("cluster.yaml", absl::StrCat("admins: [", kCarol,
                                                        "]\n"
                                                        "max_priority: 50\n"));
    cluster_.StartCoordinator(
        {"--cluster-config", config, "--metrics-listen", "127.0.0.1:0"});
  }

  // Submits `yaml` as Unix user `user`; returns the job id.
  std::string SubmitAs(const std::string& user, const std::string& name,
                       const std::string& yaml) {
    const std::string path = cluster_.WriteFile(name, yaml);
    chmod(path.c_str(), 0644);
    CommandResult r = cluster_.Ctl({"submit", path}, user);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Trim(r.out);
  }

  std::string Metrics() {
    const std::string address =
        ReadAddress(cluster_.state_dir() + "/metrics.addr");
    return HttpGet("http://" + address + "/metrics").value_or("");
  }

  // A stream to the agent service over TLS as the node certificate `node`
  // (none for an empty `node`).
  struct FakeAgent {
    std::unique_ptr<v1::AgentService::Stub> stub;
    grpc::ClientContext context;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::AgentMessage, v1::CoordinatorMessage>>
        stream;
  };
  std::unique_ptr<FakeAgent> Dial(const std::string& cert_node,
                                  const std::string& name, int gpus) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ReadAll(cluster_.certs_dir() + "/ca.pem");
    if (!cert_node.empty()) {
      const std::string base = cluster_.certs_dir() + "/nodes/" + cert_node;
      options.pem_cert_chain = ReadAll(base + ".pem");
      options.pem_private_key = ReadAll(base + ".key");
    }
    auto agent = std::make_unique<FakeAgent>();
    agent->stub = v1::AgentService::NewStub(
        grpc::CreateChannel(cluster_.address(), grpc::SslCredentials(options)));
    agent->stream = agent->stub->Connect(&agent->context);
    v1::AgentMessage hello;
    hello.mutable_register_()->set_name(name);
    for (int i = 0; i < gpus; ++i) {
      hello.mutable_register_()->add_gpus()->set_index(i);
    }
    agent->stream->Write(hello);
    return agent;
  }

  Cluster cluster_;
};

// The status a refused stream ends with.
grpc::Status Refusal(grpc::ClientReaderWriter<v1::AgentMessage,
                                              v1::CoordinatorMessage>& stream) {
  v1::CoordinatorMessage message;
  while (stream.Read(&message)) {
  }
  return stream.Finish();
}

TEST_F(SecureClusterTest, UsersAreWhoTheirMungeCredentialSaysNotWhoTheyClaim) {
  const std::string id = SubmitAs(kAlice, "a.yaml", kSleeper);
  EXPECT_EQ(cluster_.GetJob(id).user(), kAlice);

  // alice claiming to be bob is refused, and nothing is queued as bob.
  CommandResult claim = cluster_.Ctl(
      {"--user", kBob, "submit", cluster_.dir() + "/a.yaml"}, kAlice);
  EXPECT_NE(claim.exit_code, 0);
  EXPECT_THAT(claim.err, HasSubstr(absl::StrCat("you are ", kAlice,
                                                " (munge); --user ", kBob)));

  // No credential at all: refused, saying what to do.
  CommandResult none =
      RunCommand({"/usr/sbin/runuser", "-u", kAlice, "--",
                  BinDir() + "/dcvlrctl", "--coordinator", cluster_.address(),
                  "--tls-ca", cluster_.certs_dir() + "/ca.pem",
                  "--munge-socket", cluster_.dir() + "/no-such.socket", "get"},
                 cluster_.dir() + "/no-credential");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_THAT(none.err, HasSubstr("no credential came with the call"));
  EXPECT_THAT(none.err, HasSubstr("cannot get a MUNGE credential"));

  // A raw call on a TLS channel without certificate or credential.
  auto stub = v1::ClientService::NewStub(cluster_.TlsChannel(""));
  grpc::ClientContext context;
  v1::ListJobsResponse jobs;
  grpc::Status status = stub->ListJobs(&context, v1::ListJobsRequest(), &jobs);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);

  // A credential is good for one call: the same one again is refused.
  absl::StatusOr<std::string> credential = MungeEncode(cluster_.munge_socket());
  ASSERT_TRUE(credential.ok()) << credential.status();
  for (bool first : {true, false}) {
    grpc::ClientContext call;
    call.AddMetadata(kMungeMetadataKey, *credential);
    v1::ListJobsResponse listed;
    grpc::Status replay = stub->ListJobs(&call, v1::ListJobsRequest(), &listed);
    if (first) {
      EXPECT_TRUE(replay.ok()) << replay.error_message();
    } else {
      EXPECT_EQ(replay.error_code(), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_THAT(replay.error_message(), HasSubstr("replayed"));
    }
  }

  // A credential past its time to live (1 s here) is refused as expired:
  // the test waits out the TTL itself, which is what it is about.
  CommandResult short_lived =
      RunCommand({"/usr/bin/munge", "--socket", cluster_.munge_socket(),
                  "--ttl", "1", "--no-input"},
                 cluster_.dir() + "/short-lived");
  ASSERT_EQ(short_lived.exit_code, 0) << short_lived.err;
  std::this_thread::sleep_for(std::chrono::milliseconds(2200));
  {
    grpc::ClientContext call;
    call.AddMetadata(kMungeMetadataKey, Trim(short_lived.out));
    v1::ListJobsResponse listed;
    grpc::Status expired =
        stub->ListJobs(&call, v1::ListJobsRequest(), &listed);
    EXPECT_EQ(expired.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(expired.error_message(), HasSubstr("MUNGE credential expired"));
  }

  // A user certificate is the other way in, and wins over the MUNGE
  // credential of whoever runs dcvlrctl.
  ASSERT_EQ(cluster_.Certs({"user", "dcvlr-dave"}).exit_code, 0);
  const std::string dave = cluster_.certs_dir() + "/users/dcvlr-dave";
  CommandResult by_cert =
      cluster_.Ctl({"--tls-cert", dave + ".pem", "--tls-key", dave + ".key",
                    "submit", cluster_.dir() + "/a.yaml"},
                   "root");
  ASSERT_EQ(by_cert.exit_code, 0) << by_cert.err;
  EXPECT_EQ(cluster_.GetJob(Trim(by_cert.out)).user(), "dcvlr-dave");

  auto as_bob = v1::ClientService::NewStub(cluster_.TlsChannel(kBob));
  grpc::ClientContext bob_context;
  v1::GetJobRequest get;
  get.set_job(id);
  v1::Job seen;
  ASSERT_TRUE(as_bob->GetJob(&bob_context, get, &seen).ok());
  EXPECT_TRUE(seen.spec().env().empty());  // not bob's job

  EXPECT_THAT(Metrics(), HasSubstr("dcvlr_client_calls_refused_total{reason="
                                   "\"unauthenticated\"} 4"));
}

TEST_F(SecureClusterTest, AUserCannotCancelOrReadAnotherUsersJob) {
  cluster_.StartAgent("n1", 2);
  ASSERT_TRUE(cluster_.AwaitReadyNodes(1));
  const std::string id = SubmitAs(kAlice, "a.yaml", kSleeper);
  cluster_.AwaitState(id, v1::JOB_STATE_RUNNING);

  CommandResult cancel = cluster_.Ctl({"cancel", id}, kBob);
  EXPECT_NE(cancel.exit_code, 0);
  EXPECT_THAT(cancel.err, HasSubstr("may cancel only their own jobs"));
  CommandResult logs = cluster_.Ctl({"logs", id}, kBob);
  EXPECT_NE(logs.exit_code, 0);
  EXPECT_THAT(logs.err, HasSubstr("may read the logs of their own jobs"));
  EXPECT_THAT(logs.out, Not(HasSubstr("alice-was-here")));
  CommandResult metrics = cluster_.Ctl({"metrics", id}, kBob);
  EXPECT_NE(metrics.exit_code, 0);
  // bob sees the queue as squeue shows it, and no secret.
  CommandResult get = cluster_.Ctl({"-o", "json", "get", id}, kBob);
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("train-a"));
  EXPECT_THAT(get.out, HasSubstr(kAlice));
  CommandResult list = cluster_.Ctl({"-o", "json", "list"}, kBob);
  EXPECT_THAT(list.out, HasSubstr(id));
  EXPECT_EQ(cluster_.GetJob(id).state(), v1::JOB_STATE_RUNNING);
  // What the API hands bob of alice's job: no env, no script, no events.
  auto spec_of = [&](const std::string& user) {
    auto stub = v1::ClientService::NewStub(cluster_.TlsChannel(user));
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job(id);
    v1::Job job;
    EXPECT_TRUE(stub->GetJob(&context, request, &job).ok());
    return job;
  };
  const v1::Job bobs_view = spec_of(kBob);
  EXPECT_EQ(bobs_view.spec().name(), "train-a");
  EXPECT_EQ(bobs_view.state(), v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(bobs_view.spec().env().empty());
  EXPECT_TRUE(bobs_view.spec().run().empty());
  EXPECT_EQ(bobs_view.events_size(), 0);
  EXPECT_TRUE(bobs_view.redacted());
  // dcvlrctl top and describe do not ask for metrics they may not read.
  EXPECT_EQ(cluster_.Ctl({"top", "--once"}, kBob).exit_code, 0);
  CommandResult described = cluster_.Ctl({"describe", id}, kBob);
  EXPECT_EQ(described.exit_code, 0) << described.err;
  EXPECT_THAT(described.err, Not(HasSubstr("their own jobs only")));
  // Her own: all of it.
  EXPECT_EQ(spec_of(kAlice).spec().env().at("WANDB_API_KEY"),
            "alice-secret-key");
  EXPECT_FALSE(spec_of(kAlice).redacted());
  EXPECT_TRUE(Eventually([&] {
    return cluster_.Ctl({"logs", id}, kAlice).out.find("alice-was-here") !=
           std::string::npos;
  }));
  // An admin may cancel it.
  CommandResult by_admin = cluster_.Ctl({"cancel", id}, kCarol);
  EXPECT_EQ(by_admin.exit_code, 0) << by_admin.err;
  EXPECT_EQ(cluster_.AwaitEnd(id).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(Metrics(), HasSubstr("dcvlr_client_calls_refused_total{reason="
                                   "\"permission_denied\"} 3"));
}

TEST_F(SecureClusterTest, NamesResolveWithinTheCallersOwnJobs) {
  const std::string alices = SubmitAs(kAlice, "a.yaml", kSleeper);
  const std::string bobs = SubmitAs(kBob, "b.yaml", kSleeper);  // newer
  CommandResult cancel = cluster_.Ctl({"cancel", "train-a"}, kAlice);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(cluster_.GetJob(alices).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cluster_.GetJob(bobs).state(), v1::JOB_STATE_PENDING);
  // An eval or dependency naming train-a means the submitter's own.
  const std::string after =
      SubmitAs(kBob, "after.yaml", "kind: command\nrun: x\nafter: [train-a]\n");
  EXPECT_EQ(cluster_.GetJob(after).spec().after(0), bobs);
}

TEST_F(SecureClusterTest, DrainIsForAdminsAndPriorityIsCapped) {
  cluster_.StartAgent("n1", 1);
  ASSERT_TRUE(cluster_.AwaitReadyNodes(1));
  CommandResult drain = cluster_.Ctl({"drain", "n1", "--evict"}, kAlice);
  EXPECT_NE(drain.exit_code, 0);
  EXPECT_THAT(drain.err, HasSubstr("is not an admin"));
  EXPECT_EQ(cluster_.Ctl({"drain", "n1"}, kCarol).exit_code, 0);
  EXPECT_EQ(cluster_.Ctl({"undrain", "n1"}, kCarol).exit_code, 0);

  const std::string path = cluster_.WriteFile(
      "urgent.yaml", "kind: command\nrun: x\npriority: 100\n");
  CommandResult urgent = cluster_.Ctl({"submit", path}, kAlice);
  EXPECT_EQ(urgent.exit_code, 2);
  EXPECT_THAT(urgent.err, HasSubstr("urgent.yaml:3:11: priority: 100 is "
                                    "above 50, the most user dcvlr-alice may "
                                    "ask"));
  EXPECT_EQ(cluster_.Ctl({"submit", path}, kCarol).exit_code, 0);
}

TEST_F(SecureClusterTest, AnAgentMustPresentTheCertificateOfTheNodeItClaims) {
  // No certificate.
  auto anonymous = Dial("", "n1", 8);
  grpc::Status status = Refusal(*anonymous->stream);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("node certificate"));
  // n2's certificate claiming n1.
  auto impostor = Dial("n2", "n1", 8);
  status = Refusal(*impostor->stream);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(),
              HasSubstr("the node certificate is for n2: it cannot register "
                        "as node n1"));
  // A user's certificate as an agent's.
  cluster_.Certs({"user", kAlice});
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadAll(cluster_.certs_dir() + "/ca.pem");
  options.pem_cert_chain =
      ReadAll(cluster_.certs_dir() + "/users/" + kAlice + ".pem");
  options.pem_private_key =
      ReadAll(cluster_.certs_dir() + "/users/" + kAlice + ".key");
  auto stub = v1::AgentService::NewStub(
      grpc::CreateChannel(cluster_.address(), grpc::SslCredentials(options)));
  grpc::ClientContext context;
  auto stream = stub->Connect(&context);
  v1::AgentMessage hello;
  hello.mutable_register_()->set_name(kAlice);
  stream->Write(hello);
  status = Refusal(*stream);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("not a node's"));

  // None of them is a node.
  grpc::ClientContext list_context;
  v1::ListNodesResponse nodes;
  ASSERT_TRUE(cluster_.stub()
                  ->ListNodes(&list_context, v1::ListNodesRequest(), &nodes)
                  .ok());
  EXPECT_EQ(nodes.nodes_size(), 0);
  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr("dcvlr_agent_registrations_refused_total{"
                                 "reason=\"no_certificate\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("dcvlr_agent_registrations_refused_total{"
                                 "reason=\"name_mismatch\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("dcvlr_agent_registrations_refused_total{"
                                 "reason=\"wrong_certificate\"} 1"));
}

TEST_F(SecureClusterTest, AnAgentTakesNoOrdersFromACoordinatorItCannotVerify) {
  // Another lab's CA, and n1's certificate from it: the agent's files agree
  // with each other, but the coordinator's certificate is not signed by its
  // CA (nor is its own by the coordinator's).
  const std::string other = cluster_.dir() + "/other";
  for (std::vector<std::string> args :
       {std::vector<std::string>{"ca"},
        std::vector<std::string>{"node", "n1"}}) {
    std::vector<std::string> argv = {
        std::string(DCVLR_SOURCE_DIR) + "/deploy/dcvlr-certs.sh", "--dir",
        other};
    argv.insert(argv.end(), args.begin(), args.end());
    ASSERT_EQ(RunCommand(argv, cluster_.dir() + "/other-certs").exit_code, 0);
  }
  cluster_.StartAgent("n1", 2,
                      {"--tls-cert", other + "/nodes/n1.pem", "--tls-key",
                       other + "/nodes/n1.key", "--tls-ca", other + "/ca.pem"});
  const std::string log = cluster_.dir() + "/agent-n1.log";
  ASSERT_TRUE(Eventually([&] {
    return ReadAll(log).find("ended:") != std::string::npos;
  })) << ReadAll(log);
  EXPECT_THAT(ReadAll(log), Not(HasSubstr("registered with")));
  grpc::ClientContext context;
  v1::ListNodesResponse nodes;
  ASSERT_TRUE(cluster_.stub()
                  ->ListNodes(&context, v1::ListNodesRequest(), &nodes)
                  .ok());
  EXPECT_EQ(nodes.nodes_size(), 0);
}

TEST_F(SecureClusterTest, ASecondLiveAgentOfTheSameNodeIsRefused) {
  cluster_.StartAgent("n1", 2);
  ASSERT_TRUE(cluster_.AwaitReadyNodes(1));
  const std::string id = SubmitAs(kAlice, "a.yaml", kSleeper);
  cluster_.AwaitState(id, v1::JOB_STATE_RUNNING);

  // The same certificate, a second process, while the first is alive.
  auto twin = Dial("n1", "n1", 8);
  grpc::Status status = Refusal(*twin->stream);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(status.error_message(),
              HasSubstr("a second agent of the same name is refused"));
  grpc::ClientContext context;
  v1::ListNodesResponse nodes;
  ASSERT_TRUE(cluster_.stub()
                  ->ListNodes(&context, v1::ListNodesRequest(), &nodes)
                  .ok());
  ASSERT_EQ(nodes.nodes_size(), 1);
  EXPECT_EQ(nodes.nodes(0).gpus_size(), 2);  // not the twin's 8
  EXPECT_EQ(cluster_.GetJob(id).state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(cluster_.GetJob(id).attempt(), 1);
  EXPECT_THAT(Metrics(), HasSubstr("dcvlr_agent_registrations_refused_total{"
                                   "reason=\"duplicate\"} 1"));
}

TEST_F(SecureClusterTest, ANodeCannotReportForAnotherNodesAttempt) {
  cluster_.StartAgent("n1", 1);
  ASSERT_TRUE(cluster_.AwaitReadyNodes(1));
  const std::string id = SubmitAs(kAlice, "a.yaml", kSleeper);
  cluster_.AwaitState(id, v1::JOB_STATE_RUNNING);

  // n2, a node of the cluster with a good certificate, lies about n1's job.
  auto n2 = Dial("n2", "n2", 1);
  v1::CoordinatorMessage ack;
  ASSERT_TRUE(n2->stream->Read(&ack));
  ASSERT_TRUE(ack.has_ack());
  v1::AgentMessage exited;
  exited.mutable_update()->set_job_id(id);
  exited.mutable_update()->set_attempt(1);
  exited.mutable_update()->set_phase(v1::AttemptUpdate::PHASE_EXITED);
  n2->stream->Write(exited);
  v1::AgentMessage log;
  log.mutable_log()->set_job_id(id);
  log.mutable_log()->set_attempt(1);
  log.mutable_log()->set_rank(0);
  log.mutable_log()->set_offset(0);
  log.mutable_log()->set_data("injected by n2\n");
  n2->stream->Write(log);
  v1::AgentMessage far_rank = log;
  far_rank.mutable_log()->set_rank(2000000000);
  n2->stream->Write(far_rank);
  v1::AgentMessage metrics;
  metrics.mutable_metrics()->set_job_id(id);
  metrics.mutable_metrics()->set_attempt(1);
  metrics.mutable_metrics()->set_start_offset(0);
  metrics.mutable_metrics()->set_end_offset(30);
  metrics.mutable_metrics()->add_names("eval_accuracy");
  v1::MetricPoint* point = metrics.mutable_metrics()->add_points();
  point->set_step(1);
  point->add_keys(0);
  point->add_values(0.999);
  n2->stream->Write(metrics);
  v1::AgentMessage unknown = exited;
  unknown.mutable_update()->set_job_id("j-999999");
  unknown.mutable_update()->set_attempt(77777);
  n2->stream->Write(unknown);

  // Each refusal is counted; wait for the last.
  ASSERT_TRUE(Eventually([&] {
    return Metrics().find(
               "dcvlr_agent_messages_refused_total{node=\"n2\","
               "reason=\"unknown_attempt\"} 1") != std::string::npos;
  })) << Metrics();
  EXPECT_THAT(Metrics(), HasSubstr("dcvlr_agent_messages_refused_total{node="
                                   "\"n2\",reason=\"not_placed_here\"} 4"));
  EXPECT_EQ(cluster_.GetJob(id).state(), v1::JOB_STATE_RUNNING);
  CommandResult logs = cluster_.Ctl({"logs", id}, kAlice);
  EXPECT_THAT(logs.out, Not(HasSubstr("injected by n2")));
  CommandResult values = cluster_.Ctl({"metrics", id}, kAlice);
  EXPECT_THAT(values.out, Not(HasSubstr("eval_accuracy")));
  EXPECT_THAT(cluster_.CoordinatorLog(),
              HasSubstr("was not placed on node n2"));
}

TEST_F(SecureClusterTest, ChunksBeyondTheDataAreRefused) {
  // n2 (a fake agent) is the only node; the job is placed on it.
  auto n2 = Dial("n2", "n2", 1);
  v1::CoordinatorMessage message;
  ASSERT_TRUE(n2->stream->Read(&message));
  ASSERT_TRUE(message.has_ack());
  const std::string id = SubmitAs(kAlice, "a.yaml", kSleeper);
  do {
    ASSERT_TRUE(n2->stream->Read(&message));
  } while (!message.has_start());
  ASSERT_EQ(message.start().job_id(), id);
  v1::AgentMessage log;
  log.mutable_log()->set_job_id(id);
  log.mutable_log()->set_attempt(1);
  log.mutable_log()->set_rank(0);
  log.mutable_log()->set_offset(1000000000);
  log.mutable_log()->set_data("far away\n");
  n2->stream->Write(log);
  v1::AgentMessage metrics;
  metrics.mutable_metrics()->set_job_id(id);
  metrics.mutable_metrics()->set_attempt(1);
  metrics.mutable_metrics()->set_start_offset(1000000000);
  metrics.mutable_metrics()->set_end_offset(1000000040);
  n2->stream->Write(metrics);
  ASSERT_TRUE(Eventually([&] {
    return Metrics().find(
               "dcvlr_agent_messages_refused_total{node=\"n2\","
               "reason=\"bad_offset\"} 2") != std::string::npos;
  })) << Metrics();
  // What is next to the data is taken.
  v1::AgentMessage good = log;
  good.mutable_log()->set_offset(0);
  good.mutable_log()->set_data("hello from n2\n");
  n2->stream->Write(good);
  EXPECT_TRUE(Eventually([&] {
    return cluster_.Ctl({"logs", id}, kAlice).out.find("hello from n2") !=
           std::string::npos;
  }));
}

TEST_F(SecureClusterTest, ALostNodeIsNoLongerCapacity) {
  auto big = Dial("n2", "n2", 8);
  v1::CoordinatorMessage ack;
  ASSERT_TRUE(big->stream->Read(&ack));
  const std::string path = cluster_.WriteFile(
      "big.yaml", "kind: command\nrun: x\nresources: {gpus_per_node: 8}\n");
  CommandResult dry = cluster_.Ctl({"submit", "--dry-run", path}, kAlice);
  EXPECT_EQ(dry.exit_code, 0) << dry.err;
  // The node goes away and is declared lost.
  big->context.TryCancel();
  ASSERT_TRUE(Eventually(
      [&] {
        grpc::ClientContext context;
        v1::ListNodesResponse nodes;
        cluster_.stub()->ListNodes(&context, v1::ListNodesRequest(), &nodes);
        return nodes.nodes_size() == 1 &&
               nodes.nodes(0).state() == v1::NODE_STATE_LOST;
      },
      std::chrono::seconds(60)));
  CommandResult refused = cluster_.Ctl({"submit", "--dry-run", path}, kAlice);
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_THAT(refused.err, HasSubstr("the largest node has 0"));
  EXPECT_THAT(Metrics(), HasSubstr("dcvlr_node_gpus{node=\"n2\"} 0"));
}

TEST_F(SecureClusterTest, EveryChangeAndEveryRefusalIsInTheAuditTrail) {
  cluster_.StartAgent("n1", 1);
  ASSERT_TRUE(cluster_.AwaitReadyNodes(1));
  const std::string id = SubmitAs(kAlice, "a.yaml", kSleeper);
  EXPECT_NE(cluster_.Ctl({"cancel", id}, kBob).exit_code, 0);
  EXPECT_NE(cluster_.Ctl({"drain", "n1"}, kAlice).exit_code, 0);
  EXPECT_EQ(cluster_.Ctl({"drain", "n1"}, kCarol).exit_code, 0);
  auto impostor = Dial("n1", "n2", 1);
  Refusal(*impostor->stream);
  cluster_.SignalCoordinator(SIGHUP);

  // Not for users.
  CommandResult refused = cluster_.Ctl({"audit"}, kAlice);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, HasSubstr("the audit trail is for the cluster "
                                     "config's admins"));
  nlohmann::json trail;
  ASSERT_TRUE(Eventually([&] {
    CommandResult audit = cluster_.Ctl({"-o", "json", "audit"}, kCarol);
    if (audit.exit_code != 0) return false;
    trail = nlohmann::json::parse(audit.out);
    return std::any_of(trail.begin(), trail.end(),
                       [](const auto& r) { return r["action"] == "reload"; });
  })) << trail.dump(2);
  auto find = [&](const std::string& who, const std::string& action) {
    for (const auto& r : trail) {
      if (r["principal"] == who && r["action"] == action) return r;
    }
    return nlohmann::json();
  };
  nlohmann::json submit = find(kAlice, "submit");
  EXPECT_EQ(submit["outcome"], "ok");
  EXPECT_EQ(submit["method"], "munge");
  EXPECT_THAT(submit["target"].get<std::string>(), HasSubstr(id));
  EXPECT_THAT(submit["peer"].get<std::string>(), HasSubstr("127.0.0.1"));
  EXPECT_THAT(find(kBob, "cancel")["outcome"].get<std::string>(),
              HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(find(kAlice, "drain")["outcome"].get<std::string>(),
              HasSubstr("is not an admin"));
  EXPECT_EQ(find(kCarol, "drain")["outcome"], "ok");
  EXPECT_EQ(find(kCarol, "drain")["target"], "n1");
  EXPECT_EQ(find("node:n1", "register")["outcome"], "ok");
  EXPECT_THAT(find("node:n2", "register")["outcome"].get<std::string>(),
              HasSubstr("cannot register as node n2"));
  EXPECT_EQ(find("coordinator", "reload")["outcome"], "ok");
  // Newest first; durable across a restart.
  cluster_.StopCoordinator();
  cluster_.StartCoordinator(
      {"--cluster-config", cluster_.dir() + "/cluster.yaml"});
  CommandResult again = cluster_.Ctl({"audit", "--since", "1h"}, kCarol);
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("drain"));
  EXPECT_THAT(again.out, HasSubstr(id));
}

class StartupTest : public ::testing::Test {
 protected:
  void SetUp() override { cluster_.EnableSecurity({"n1"}); }

  CommandResult Coordinator(std::vector<std::string> args) {
    std::vector<std::string> argv = {BinDir() + "/dcvlr-coordinator",
                                     "--listen", "127.0.0.1:0", "--state-dir",
                                     cluster_.dir() + "/s"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, cluster_.dir() + "/startup");
  }
  std::string Cert(const std::string& path) {
    return cluster_.certs_dir() + "/" + path;
  }

  Cluster cluster_;
};

TEST_F(StartupTest, BadCertificatesStopAProgramBeforeItTrustsAnything) {
  // An expired node certificate.
  ASSERT_EQ(cluster_.Certs({"--days", "-1", "node", "old"}).exit_code, 0);
  CommandResult expired = RunCommand(
      {BinDir() + "/dcvlr-agent", "--coordinator", "127.0.0.1:1", "--name",
       "old", "--gpus", "1", "--work-dir", cluster_.dir() + "/w", "--tls-cert",
       Cert("nodes/old.pem"), "--tls-key", Cert("nodes/old.key"), "--tls-ca",
       Cert("ca.pem")},
      cluster_.dir() + "/expired");
  EXPECT_EQ(expired.exit_code, 2);
  EXPECT_THAT(expired.err, HasSubstr("--tls-cert " + Cert("nodes/old.pem") +
                                     ": certificate expired on"));
  // A user's certificate as a node's.
  ASSERT_EQ(cluster_.Certs({"user", "someone"}).exit_code, 0);
  CommandResult user_as_node =
      RunCommand({BinDir() + "/dcvlr-agent", "--coordinator", "127.0.0.1:1",
                  "--gpus", "1", "--work-dir", cluster_.dir() + "/w",
                  "--tls-cert", Cert("users/someone.pem"), "--tls-key",
                  Cert("users/someone.key"), "--tls-ca", Cert("ca.pem")},
                 cluster_.dir() + "/user-as-node");
  EXPECT_EQ(user_as_node.exit_code, 2);
  EXPECT_THAT(user_as_node.err,
              HasSubstr("a user certificate (OU=dcvlr-user) where a node "
                        "certificate (OU=dcvlr-node) is needed"));
  // A node's certificate as the coordinator's.
  CommandResult role =
      Coordinator({"--tls-cert", Cert("nodes/n1.pem"), "--tls-key",
                   Cert("nodes/n1.key"), "--tls-ca", Cert("ca.pem")});
  EXPECT_EQ(role.exit_code, 2);
  EXPECT_THAT(role.err, HasSubstr("a node certificate (OU=dcvlr-node) where a "
                                  "coordinator certificate"));
  // Another lab's CA.
  CommandResult other =
      RunCommand({std::string(DCVLR_SOURCE_DIR) + "/deploy/dcvlr-certs.sh",
                  "--dir", cluster_.dir() + "/other", "ca"},
                 cluster_.dir() + "/other-ca");
  ASSERT_EQ(other.exit_code, 0) << other.err;
  CommandResult wrong_ca = Coordinator(
      {"--tls-cert", Cert("coordinator.pem"), "--tls-key",
       Cert("coordinator.key"), "--tls-ca", cluster_.dir() + "/other/ca.pem"});
  EXPECT_EQ(wrong_ca.exit_code, 2);
  EXPECT_THAT(wrong_ca.err, HasSubstr("not signed by the cluster CA"));
  // A key that is not the certificate's.
  CommandResult key =
      Coordinator({"--tls-cert", Cert("coordinator.pem"), "--tls-key",
                   Cert("nodes/n1.key"), "--tls-ca", Cert("ca.pem")});
  EXPECT_EQ(key.exit_code, 2);
  EXPECT_THAT(key.err, HasSubstr("is not the key of --tls-cert"));
  // A node certificate as a user's client certificate.
  CommandResult ctl = RunCommand(
      {BinDir() + "/dcvlrctl", "--tls-ca", Cert("ca.pem"), "--tls-cert",
       Cert("nodes/n1.pem"), "--tls-key", Cert("nodes/n1.key"), "get"},
      cluster_.dir() + "/ctl");
  EXPECT_EQ(ctl.exit_code, 2);
  EXPECT_THAT(ctl.err, HasSubstr("a node certificate (OU=dcvlr-node) where a "
                                 "user certificate"));
  // Neither TLS nor --insecure; --insecure off loopback.
  CommandResult bare = Coordinator({});
  EXPECT_EQ(bare.exit_code, 2);
  EXPECT_THAT(bare.err, HasSubstr("or --insecure for development"));
  CommandResult open =
      RunCommand({BinDir() + "/dcvlr-coordinator", "--listen", "0.0.0.0:0",
                  "--state-dir", cluster_.dir() + "/s", "--insecure"},
                 cluster_.dir() + "/open");
  EXPECT_EQ(open.exit_code, 2);
  EXPECT_THAT(open.err, HasSubstr("only loopback may be served"));
}

}  // namespace
}  // namespace dcvlr::testing
