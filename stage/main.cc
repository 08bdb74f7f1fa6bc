// sluice-stage: a stage worker (or, binding both sides with op pass, a hub).
// Everything is in StageMain, which a stage of the user's own shares.
#include "sluice/op.h"

int main(int argc, char** argv) { return sluice::StageMain(argc, argv); }
