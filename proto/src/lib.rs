//! Generated wire types. Owns nothing but the contracts in `proto/`; no logic lives here.
//! Built without the `grpc` feature it holds only prost messages (for the wasm filter).

pub mod resolver {
    pub mod v1 {
        #![allow(clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/sandgate.resolver.v1.rs"));
    }
}

pub mod ctrlplane {
    pub mod v1 {
        #![allow(clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/sandgate.ctrlplane.v1.rs"));
    }
}
