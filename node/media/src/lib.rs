//! treecast-media: pure media building blocks (no IO, no clock). See the module docs.
