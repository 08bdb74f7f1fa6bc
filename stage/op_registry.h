// stage/op_registry.h
//
// The ops a stage knows: every RegisterOp (sluice/op.h) lands here. The
// built-in ops register through RegisterBuiltinOps(), called by StageMain
// before the flags are parsed (a static registrar in a static library would
// be dropped by the linker); ops linked into a program of the user's own
// register through their static RegisterOp objects.
//
// Thread safety: registration happens before main's work starts (static
// initialization, or the first lines of StageMain); lookups afterwards are
// read-only.
#ifndef SLUICE_STAGE_OP_REGISTRY_H_
#define SLUICE_STAGE_OP_REGISTRY_H_

#include <string>
#include <string_view>
#include <vector>

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

// Built-in registration functions, one per file under stage/ops/.
void RegisterSimulatedOps();
void RegisterExecOp();
void RegisterHttpOp();

}  // namespace sluice

#endif  // SLUICE_STAGE_OP_REGISTRY_H_
