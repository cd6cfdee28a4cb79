//! Vigil plugin SDK.
