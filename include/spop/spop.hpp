// Umbrella header: the whole library.
#pragma once

#include "actions.hpp"
#include "buffer_pool.hpp"
#include "connection.hpp"
#include "data.hpp"
#include "frame.hpp"
#include "handshake.hpp"
#include "kv.hpp"
#include "message.hpp"
#include "notify.hpp"
#include "service.hpp"
#include "status.hpp"
#include "ticket.hpp"
#include "varint.hpp"
#include "writer.hpp"
