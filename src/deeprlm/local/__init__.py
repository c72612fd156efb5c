"""The embedded model, in one package: where its files live and how they are put together
(`home`, `weights`, `hub`), which llama.cpp build suits this CPU (`build`), and the child
process that runs llama.cpp (`llama`, the adapter; `process`, its handle on the child;
`protocol`, the wire; `worker` and `runtime`, the child's side). Nothing here imports
llama.cpp in the user's process."""
