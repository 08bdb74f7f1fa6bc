// stage/op_registry.h
//
// The ops a stage knows: every RegisterOp (sluice/op.h) lands here. The
// built-in ops register through RegisterBuiltinOps(), called by StageMain
// before the flags are parsed (a static registrar in a static library would
// be dropped by the linker); ops linked into a program of the user's own
// register through their static RegisterOp objects.
//
// It also resolves the ops' own flags per op of a chain (see "Op flags"
// below).
//
// Thread safety: registration happens before main's work starts (static
// initialization, or the first lines of StageMain); lookups afterwards are
// read-only. The flag functions are called by StageMain before the stage
// runs; a definition made by WithFlags() may make instances on any thread.
#ifndef SLUICE_STAGE_OP_REGISTRY_H_
#define SLUICE_STAGE_OP_REGISTRY_H_

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/program_options.hpp>

#include "sluice/op.h"

namespace sluice {

// Registers token, result, pass, exec and http (idempotent).
void RegisterBuiltinOps();

// The op registered under `name`, or nullptr.
const OpDefinition* FindOp(std::string_view name);
// Every registered op, sorted by name.
std::vector<const OpDefinition*> RegisteredOps();
// "exec, http, pass, result, token".
std::string RegisteredOpNames();

// Op flags
//
// An op's own flags (those its OpDefinition::flags declares: --url,
// --exec, --exec-procs, ...) belong to each op of the chain separately:
//
//   * A flag given once applies to every op of the chain that takes it.
//   * A flag given several times is positional: the k-th occurrence goes to
//     the k-th op of the chain that takes it. It must then be given exactly
//     once per such op; any other count is a usage error naming the flag,
//     the count and the ops.
//   * A flag whose value is a list (--header: repeat it for more values)
//     keeps that meaning: every occurrence goes to every op that takes it.
//   * An op's flag that no op of the chain takes is ignored.
//
//   --op http,exec,http --url A --url B --exec 'python3 -u x.py' --rate 50
//     the first http calls A, the second B; both limit themselves to 50
//     calls per second.
//
// Occurrences count within the source that sets the flag: the command line,
// else a SLUICE_<FLAG> environment variable (one value: for every op), else
// the --config file (repeat the line). Each value is one token, never split
// on commas or spaces.

// Adds `op`'s flags to `options` in a form the parser accepts any number of
// times; the help text of each is the op's own (name, default, description).
void AddRepeatableOpFlags(const OpDefinition& op,
                          boost::program_options::options_description& options);

// The flags each op of `chain` sees as OpContext::flags (and its check
// function), in chain order: every flag of `parsed` that is not an op's own,
// plus the op's own flags (from AddRepeatableOpFlags) resolved by the rule
// above, defaults and the op's value checks applied. InvalidArgument naming
// the flag on a wrong count or a value the op's flag spec refuses.
StatusOr<std::vector<std::unique_ptr<boost::program_options::variables_map>>>
OpFlagsPerOp(const boost::program_options::variables_map& parsed,
             std::span<const OpDefinition* const> chain);

// "--op http", or "--op http (op 3 of the chain)" when the chain has more
// than one http: how a message names op `i` of `chain`.
std::string OpInChain(std::span<const OpDefinition* const> chain, size_t i);

// `op`, whose make_* functions hand each instance `flags` as
// OpContext::flags instead of the stage's. `flags` must outlive the
// definition and every instance it makes.
OpDefinition WithFlags(const OpDefinition& op,
                       const boost::program_options::variables_map* flags);

// Built-in registration functions, one per file under stage/ops/.
void RegisterSimulatedOps();
void RegisterExecOp();
void RegisterHttpOp();

}  // namespace sluice

#endif  // SLUICE_STAGE_OP_REGISTRY_H_
