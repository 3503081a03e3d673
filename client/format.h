// How dcvlrctl prints jobs and nodes: aligned tables for people, JSON for
// scripts (`-o json`).
#ifndef DCVLR_CLIENT_FORMAT_H_
#define DCVLR_CLIENT_FORMAT_H_

#include <string>
#include <vector>

#include "dcvlr/v1/client.pb.h"
#include "dcvlr/v1/job.pb.h"
#include "nlohmann/json.hpp"

namespace dcvlr {

nlohmann::json JobToJson(const v1::Job& job);
nlohmann::json NodeToJson(const v1::Node& node);

std::string JobsTable(const std::vector<v1::Job>& jobs);
std::string NodesTable(const std::vector<v1::Node>& nodes);
// `dcvlrctl describe`: the spec in brief, attempts, and every event.
std::string DescribeJob(const v1::Job& job);

// `dcvlrctl queue`: pending jobs in scheduling order, then users' shares.
std::string QueueTables(const v1::GetQueueResponse& queue);
nlohmann::json QueueToJson(const v1::GetQueueResponse& queue);

// "2026-11-26 13:40:01" in local time; "-" for 0.
std::string FormatTime(int64_t time_ms);

}  // namespace dcvlr

#endif  // DCVLR_CLIENT_FORMAT_H_
